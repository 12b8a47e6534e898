#!/usr/bin/env bash
# rdmaps-perf ps reports the iterations it was given as iters, in JSON and in
# its table, and the timings of all workers together as samples (it printed
# iterations times workers as iters). With --bound off it measures no bound
# (its probes took most of a run: 19 CPU-seconds of these two, session 66),
# and says so: no ratio, the bound's fields null, no bound line.
set -euo pipefail
perf=${1:?rdmaps-perf path}
fail() { echo "check_perf_ps_iters: FAIL: $*" >&2; exit 1; }
run() { "$perf" ps --transport tcp --workers 2 --floats 65536 --iters 3 --bound off "$@"; }
row=$(run --json)
/usr/bin/python3 - "$row" <<'PY' || fail "JSON: $row"
import json, sys
r = json.loads(sys.argv[1])
assert r["iters"] == 3 and r["samples"] == 2 * 3, r
assert r["ratio"] is None and r["no_ratio_because"] == "--bound off: no bound was measured", r
for k in ("bound_s", "bound_wire_s", "bound_memory_s", "transport_push_GBps", "transport_pull_all_GBps",
          "push_vs_transport", "pull_vs_transport"):
    assert r[k] is None, (k, r)
assert r["iter_p50_s"] > 0 and r["intake_GBps"] > 0, r
PY
table=$(run)
/usr/bin/python3 - "$table" <<'PY' || fail "table: $table"
import sys
text = sys.argv[1]
lines = [l.split() for l in text.splitlines() if not l.startswith("#")]
head, row = lines[-2], lines[-1]
assert head[:2] == ["iters", "samples"] and row[:2] == ["3", "6"], (head, row)
assert row[-4:] == ["-", "-", "-", "n/a"] and "# no ratio: --bound off" in text and "# bound =" not in text, text
PY
echo "rdmaps-perf ps: iters as given, samples of all workers; --bound off measures no bound and says so"
