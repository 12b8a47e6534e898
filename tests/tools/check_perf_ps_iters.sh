#!/usr/bin/env bash
# rdmaps-perf ps reports the iterations it was given as iters, in JSON and in
# its table, and the timings of all workers together as samples (it printed
# iterations times workers as iters).
set -euo pipefail
perf=${1:?rdmaps-perf path}
fail() { echo "check_perf_ps_iters: FAIL: $*" >&2; exit 1; }
run() { "$perf" ps --transport tcp --workers 2 --floats 65536 --iters 3 "$@"; }
row=$(run --json)
/usr/bin/python3 - "$row" <<'PY' || fail "JSON: $row"
import json, sys
r = json.loads(sys.argv[1])
assert r["iters"] == 3 and r["samples"] == 2 * 3, r
PY
table=$(run)
/usr/bin/python3 - "$table" <<'PY' || fail "table: $table"
import sys
lines = [l.split() for l in sys.argv[1].splitlines() if not l.startswith("#")]
head, row = lines[-2], lines[-1]
assert head[:2] == ["iters", "samples"] and row[:2] == ["3", "6"], (head, row)
PY
echo "rdmaps-perf ps: iters as given, samples of all workers"
