#!/usr/bin/env bash
# A local run's child processes end with the process that started them: kill
# rdmaps-train's driver or rdmaps-perf (SIGTERM or SIGKILL, which no handler
# sees) and no server or worker keeps running, holding cores, ports and memory.
#   tests/tools/check_orphans.sh RDMAPS_TRAIN RDMAPS_PERF OUT_DIR
set -euo pipefail
train=$1; perf=$2; out=$3
mkdir -p "$out"
groups=()
cleanup() { for g in "${groups[@]}"; do kill -9 -- "-$g" 2>/dev/null || true; done; }
trap cleanup EXIT
fail() { echo "FAILED: $*"; ps -o pid,ppid,pgid,etimes,args -g "${groups[*]}" 2>/dev/null || true; exit 1; }

descendants() {  # every process below pid $1
  local kids
  kids=$(pgrep -P "$1" || true)
  for k in $kids; do echo "$k"; descendants "$k"; done
}

# CASE SIGNAL COMMAND...: start COMMAND in a process group of its own, wait
# for its children, send SIGNAL to the top process only, then every child
# must be gone within 10 s (a child that missed it would run for minutes).
check() {
  local name=$1 sig=$2
  shift 2
  setsid "$@" >"$out/$name.log" 2>&1 &
  local top=$!
  groups+=("$top")
  local kids=""
  for _ in $(seq 200); do
    kids=$(descendants "$top")
    [ "$(echo "$kids" | grep -c .)" -ge 2 ] && break
    kill -0 "$top" 2>/dev/null || fail "$name: exited before it started its children: $(tail -3 "$out/$name.log")"
    sleep 0.1
  done
  [ "$(echo "$kids" | grep -c .)" -ge 2 ] || fail "$name: fewer than 2 child processes after 20 s"
  sleep 1  # past start-up: the children are connected and working
  kill "-$sig" "$top"
  wait "$top" 2>/dev/null || true
  for _ in $(seq 100); do
    local alive=""
    for k in $kids; do kill -0 "$k" 2>/dev/null && [ "$(ps -o stat= -p "$k" | cut -c1)" != Z ] && alive+=" $k"; done
    [ -z "$alive" ] && { echo "ok: $name: SIG$sig to the parent ended its $(echo "$kids" | wc -w) children"; return 0; }
    sleep 0.1
  done
  fail "$name: children$alive still run 10 s after SIG$sig to their parent"
}

# Long enough that nothing ends by itself while the test watches.
check train-term TERM "$train" --workers 2 --epochs 1000 --train-limit 6000 --test-limit 500 --transport shm
check train-kill KILL "$train" --workers 2 --epochs 1000 --train-limit 6000 --test-limit 500 --transport tcp
check perf-kill KILL "$perf" ps --transport shm --floats 1000000 --workers 2 --iters 1000000
# CASE ROLE SIGNAL TEXT COMMAND...: start COMMAND in a process group of its
# own, send SIGNAL to its first child of --role ROLE once it works; COMMAND
# must then end, failing, with TEXT (naming the child and how) in its output.
kill_child() {
  local name=$1 role=$2 sig=$3 text=$4
  shift 4
  local log="$out/$name.log" top child="" status=0
  setsid "$@" >"$log" 2>&1 &
  top=$!
  groups+=("$top")
  for _ in $(seq 200); do
    child=$(pgrep -P "$top" -f -- "--role $role" | head -1 || true)
    [ -n "$child" ] && break
    sleep 0.1
  done
  [ -n "$child" ] || fail "$name: no $role process after 20 s"
  sleep 1
  kill "-$sig" "$child"
  timeout 60 tail --pid="$top" -f /dev/null || fail "$name: still runs 60 s after its $role died"
  wait "$top" || status=$?
  [ "$status" -ne 0 ] || fail "$name: exited 0"
  grep -q "$text" "$log" || fail "$name: not named: $(tail -3 "$log")"
  echo "ok: $name: $(grep -o "${text}[^)]*)" "$log" | head -1)"
}

# The other way round: a worker killed under a running job is reported as
# killed, naming the signal (it leaves no error of its own to point to).
kill_child worker-kill worker KILL "was killed by signal 9" \
  "$train" --workers 2 --epochs 1000 --train-limit 6000 --test-limit 500 --transport shm
# A server killed under a running job is named with the signal, not only the
# worker that failed after it with a connection error (the driver watched
# its workers alone).
kill_child train-server-kill server KILL "server 0 was killed by signal 9" \
  "$train" --workers 2 --epochs 1000 --train-limit 6000 --test-limit 500 --transport tcp
# rdmaps-perf ps whose server dies: the server is named, not "a worker process
# failed" (its workers then fail with peer-gone).
kill_child server-kill server SEGV "server 0 was killed by signal 11" \
  "$perf" ps --transport tcp --floats 1000000 --workers 2 --iters 1000000

# A child that finds its parent already gone exits instead of starting.
RDMAPS_PARENT_PID=1 "$train" --role virtual >"$out/orphan.log" 2>&1 && fail "a child whose parent is gone ran"
grep -q "the parent process 1 is gone" "$out/orphan.log" || fail "no reason given: $(cat "$out/orphan.log")"
echo "ok: a child whose parent is gone exits at once"
# Empty is unset, as every RDMAPS_ variable; garbage is named (both were "the parent process 0 is gone").
RDMAPS_PARENT_PID= "$train" --help >/dev/null 2>&1 || fail "RDMAPS_PARENT_PID= (empty) stopped rdmaps-train"
RDMAPS_PARENT_PID=abc "$train" --help >"$out/garbage.log" 2>&1 && fail "RDMAPS_PARENT_PID=abc was taken"
grep -q "RDMAPS_PARENT_PID='abc' is not a process id" "$out/garbage.log" || fail "not named: $(cat "$out/garbage.log")"
echo "ok: an empty RDMAPS_PARENT_PID is unset, a bad one named"

