#!/usr/bin/env bash
# rdmaps-perf transport, tcp active messages: every byte lands with the auto
# window (about 1 MiB in flight, 4 to 64 operations) and with a fixed one, the
# JSON rows report the window used, --window 0 is refused naming the flag, and
# --lat-iters 0 runs the bandwidth phase alone; --span and --target-span walk
# source and target buffers that large with every piece checked.
set -euo pipefail
perf=${1:?rdmaps-perf path}
fail() { echo "check_perf_window: FAIL: $*" >&2; exit 1; }
run() { "$perf" transport --transport tcp --op am --iters 20 --json "$@"; }
rows=$(run --sizes 4K,64K,1M)
/usr/bin/python3 - "$rows" <<'PY' || fail "auto window rows: $rows"
import json, sys
rows = [json.loads(line) for line in sys.argv[1].splitlines()]
assert [r["bytes"] for r in rows] == [4096, 65536, 1048576], rows
assert [r["window"] for r in rows] == [64, 16, 4], rows
assert all(r["wrong"] == 0 and r["bw_MiBps"] > 0 for r in rows), rows
PY
rows=$(run --sizes 256K --window 3)
/usr/bin/python3 - "$rows" <<'PY' || fail "fixed window row: $rows"
import json, sys
r = json.loads(sys.argv[1])
assert r["window"] == 3 and r["wrong"] == 0 and r["iters"] == 20, r
PY
# --lat-iters 0: the bandwidth phase alone, its bytes still checked, no latency reported.
rows=$(run --sizes 64K --lat-iters 0)
/usr/bin/python3 - "$rows" <<'PY' || fail "bandwidth-only row: $rows"
import json, sys
r = json.loads(sys.argv[1])
assert r["lat_p50_us"] is None and r["wrong"] == 0 and r["bw_MiBps"] > 0, r
PY
rows=$(run --sizes 64K --lat-iters 5)
/usr/bin/python3 - "$rows" <<'PY' || fail "row with 5 latency samples: $rows"
import json, sys
r = json.loads(sys.argv[1])
assert r["lat_p50_us"] > 0 and r["wrong"] == 0 and r["lat_samples"] == 5, r
PY
# Capped at the iterations, and the row says so (p99 of 20 samples is their maximum).
rows=$(run --sizes 64K --iters 20 --lat-iters 500)
/usr/bin/python3 - "$rows" <<'PY' || fail "latency samples capped at --iters: $rows"
import json, sys
r = json.loads(sys.argv[1])
assert r["lat_samples"] == 20 and r["iters"] == 20, r
PY
for op in am put get; do
  target=256K
  [ $op = get ] && target=1M  # a get walks one span on both sides
  rows=$("$perf" transport --transport tcp --op $op --iters 40 --json --sizes 64K --span 1M --target-span $target \
    --lat-iters 0)
  /usr/bin/python3 - "$rows" "$op" <<'PY' || fail "$op row with --span: $rows"
import json, sys
r = json.loads(sys.argv[1])
target = 1048576 if sys.argv[2] == "get" else 262144
assert r["span"] == 1048576 and r["target_span"] == target and r["wrong"] == 0, r
PY
done
err=$(mktemp)
trap 'rm -f "$err"' EXIT
if "$perf" transport --transport tcp --op get --sizes 64K --span 1M --target-span 256K 2>"$err"; then
  fail "a get with --target-span other than --span was accepted"
fi
grep -q -- "--target-span 262144 differs from --span 1048576" "$err" || fail "--target-span message: $(cat "$err")"
if "$perf" transport --window 0 --sizes 8 2>"$err"; then fail "--window 0 was accepted"; fi
grep -q -- "--window: '0' is not a whole number from 1" "$err" || fail "--window 0 message: $(cat "$err")"
echo "check_perf_window: ok"
