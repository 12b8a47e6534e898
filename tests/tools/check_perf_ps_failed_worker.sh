#!/usr/bin/env bash
# rdmaps-perf ps names the worker that failed, as soon as it did: it read the
# workers' reports one by one, so with worker 2 gone before it connected,
# workers 0 and 1 waited at the clock for its 60 s timeout, and worker 0 was
# blamed (a server refusing one worker for memory looked so).
set -euo pipefail
perf=${1:?rdmaps-perf path}
fail() { echo "check_perf_ps_failed_worker: FAIL: $*" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$perf" ps --transport tcp --workers 3 --floats 65536 --iters 50 >"$out" 2>&1 &
driver=$!
# Worker 2, killed as it starts: long before it connects (its UCX alone takes longer).
for _ in $(seq 1000); do
  victim=$(pgrep -P "$driver" -f -- "--role worker --worker 2 " || true)  # this run's, not another test's
  [ -n "$victim" ] && break
  sleep 0.01
done
[ -n "$victim" ] || { kill "$driver"; fail "worker 2 never started"; }
kill -9 $victim
status=0
wait "$driver" || status=$?
[ "$status" -ne 0 ] || fail "the run passed with a worker killed: $(cat "$out")"
last=$(grep 'error' "$out" | tail -n 1)
echo "$last" | grep -q "worker 2 was killed by signal 9" || fail "the error does not name worker 2 as killed: $last"
echo "rdmaps-perf ps: $last"
