#!/usr/bin/env bash
# A server at its open-files limit keeps serving: with 60 connections
# arriving at a server allowed 40 files, accept fails (EMFILE) with the
# connection still queued. The server used to retry it without end on its
# control thread: no stats line, 86 % of a core, and SIGTERM never ended it.
# Now it logs the refusal (at most 10 lines a second), keeps printing its
# stats every second, and stops on SIGTERM.
#   tests/tools/check_out_of_files.sh RDMAPS_SERVER OUT_DIR
set -uo pipefail
server=$1 out=$2
mkdir -p "$out"
log=$out/server.log
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(ulimit -n 40 && exec "$server" --listen "127.0.0.1:$port" --workers 1 --stats-interval 1 --keep-running) >"$log" 2>&1 &
pid=$!
for _ in $(seq 50); do grep -q "listening on" "$log" && break; sleep 0.1; done
python3 - "$port" <<'PY' &
import socket, sys, time
held = []
for _ in range(60):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", int(sys.argv[1])))
    except BlockingIOError:
        pass
    held.append(s)
time.sleep(8)
PY
clients=$!
sleep 6
stats=$(grep -c "pushes/s" "$log")
refusals=$(grep -c "Too many open files" "$log")
kill -TERM "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
failures=0
if kill -0 "$pid" 2>/dev/null; then
  echo "FAILED: the server did not end within 5 s of SIGTERM"; kill -9 "$pid"; failures=$((failures + 1))
fi
wait "$clients" 2>/dev/null
if [ "$refusals" -lt 1 ]; then echo "FAILED: the server never ran out of files (the test did not test)"; failures=$((failures + 1)); fi
# At most 10 lines a second, over the 6 s and the moments before: not a line per failed accept.
if [ "$refusals" -gt 80 ]; then echo "FAILED: $refusals refusal lines in about 6 s (at most 10 a second)"; failures=$((failures + 1)); fi
if [ "$stats" -lt 3 ]; then echo "FAILED: $stats stats lines in 6 s at the file limit (its control thread is stuck)"; failures=$((failures + 1)); fi
echo "at the file limit: $stats stats lines in 6 s, $refusals refusals logged"
if [ $failures -gt 0 ]; then tail -20 "$log"; exit 1; fi
echo "ok: a server out of files keeps serving and stops on SIGTERM"
