#!/usr/bin/env bash
# rdmaps-train, rdmaps-server and the PyTorch example under the real
# launchers: Open MPI's mpirun (PMIx), a one-node Slurm's srun (with and
# without PMIx) and python3 -m rdmaps.launch (the MASTER_ADDR rendezvous),
# then launches that must fail with an error naming what is wrong.
# A launcher that is not installed fails this test (scripts/install-deps.sh
# installs them).
#   check_launchers.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$(realpath "$1")
source=$(realpath "$2")
train=$build/src/rdmaps-train
server=$build/src/rdmaps-server
work=$(mktemp -d /tmp/rdmaps-launch.XXXXXX)
slurm_dir=$(mktemp -d /tmp/rdmaps-slurm.XXXXXX)  # reachable by munged's user, unlike $work
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  "$source"/tests/launch/slurm_one_node.sh stop "$slurm_dir" >/dev/null 2>&1
  rm -rf "$work" "$slurm_dir"
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # through the EXIT trap: no daemon outlives the test
failures=0
free_port() { "$(dirname "$0")/../common/free_ports.py" "$@"; }  # [N]: the first of N in a row
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

for p in mpirun srun; do
  command -v $p >/dev/null || { echo "FAIL: $p is not installed (scripts/install-deps.sh installs it)"; exit 1; }
done
mpirun=(mpirun --oversubscribe)
[ "$(id -u)" -ne 0 ] || mpirun+=(--allow-run-as-root)
RDMAPS_SECRET=$(openssl rand -hex 32)
export RDMAPS_SECRET
# meson test sets MALLOC_PERTURB_, under which Debian's mpirun 4.1.4 itself
# crashes and spins while aborting a failed job (our programs are checked
# with it everywhere else).
unset MALLOC_PERTURB_
export PYTHONPATH=$build/python UCX_NET_DEVICES=lo
small=(--epochs 1 --train-limit 12000 --test-limit 2000 --expect-accuracy 0.60 --launch-timeout 60)

# Runs LOG LIMIT COMMAND...: the launch with its output in LOG, killed after
# LIMIT s; sets `status` and `took`. Each launch takes 1-8 s alone; one still
# running after $slow_after s has its processes listed in LOG.ps (a whole run once took
# 244 s against 113, one case killed at its limit, with nothing to say which
# process waited).
slow_after=30
run_launch() {
  local log=$1 limit=$2
  shift 2
  local started=$SECONDS
  timeout -k 10 "$limit" "$@" >"$log" 2>&1 &
  local launch=$!
  # shellcheck disable=SC2009  # the tree with each process's wait channel, which pgrep does not give
  (sleep "$slow_after"; ps -eo pid,ppid,stat,wchan:32,etime,args --forest | grep -E 'mpirun|orted|prte|srun|rdmaps|python3' \
    | grep -v grep >"$log.ps") >/dev/null 2>&1 &
  local watch=$!
  wait "$launch"
  status=$?
  took=$((SECONDS - started))
  kill "$watch" 2>/dev/null
  wait "$watch" 2>/dev/null
  return 0
}

# After a launch that passed: if it ran long, what it printed and which processes were still running.
show_slow() {
  local name=$1 log=$2
  [ "$took" -gt "$slow_after" ] || return 0
  echo "   $name took ${took} s (exit status $status); the end of its output:"
  grep -v '^progress' "$log" | tail -n 15 | sed 's/^/   | /'
  if [ -s "$log.ps" ]; then echo "   its processes at $slow_after s:"; cut -c1-200 "$log.ps" | sed 's/^/   | /'; fi
}

# Runs a launch; it must exit 0 and its output must hold every given text.
expect_ok() {
  local name=$1 log=$work/$1.log
  shift
  local texts=()
  while [ "$1" != "--" ]; do texts+=("$1"); shift; done
  shift
  run_launch "$log" 180 "$@"
  if [ $status -ne 0 ]; then
    fail "$name: exit status $status"; grep -v '^progress' "$log" | tail -n 25
    return
  fi
  for t in "${texts[@]}"; do
    grep -qF -- "$t" "$log" || { fail "$name: no '$t' in its output"; grep -v '^progress' "$log" | tail -n 25; return; }
  done
  echo "ok: $name ($took s): $(grep -m1 -oE 'final test accuracy [0-9.]+|"test_accuracy": [0-9.]+' "$log")"
  show_slow "$name" "$log"
}

# Runs a launch that must fail, within its timeout, naming `text`.
expect_error() {
  local name=$1 text=$2 log=$work/$1.log
  shift 2
  run_launch "$log" 120 "$@"
  if [ $status -eq 0 ] || [ $status -eq 124 ]; then
    fail "$name: exit status $status, expected an error"; tail -n 15 "$log"
  elif ! grep -qF -- "$text" "$log"; then
    fail "$name: the error does not say '$text'"; tail -n 15 "$log"
  else
    echo "ok: $name ($took s): $(grep -m1 -F -- "$text" "$log" | cut -c1-200)"
    show_slow "$name" "$log"
  fi
}

echo "== mpirun (Open MPI $(mpirun --version 2>&1 | grep -oE '[0-9]+\.[0-9.]+' | head -1), PMIx)"
# Without --transport, a launched rdmaps-train reaches other hosts (shm, a local run's default, left them unreachable).
expect_ok mpirun-train "addresses through PMIx" "server 0 of 1" "worker 2 of 3" "transport auto" "final test accuracy" -- \
  "${mpirun[@]}" -x RDMAPS_SECRET -np 4 "$train" --servers 1 "${small[@]}"
expect_ok mpirun-two-servers "server 1 of 2" "worker 1 of 2" -- \
  "${mpirun[@]}" -x RDMAPS_SECRET -np 4 "$train" --servers 2 "${small[@]}"
# One launch, two programs: rdmaps-server on rank 0, rdmaps-train workers after it.
expect_ok mpirun-server-and-train "rdmaps-server rank 0 of 3" "final test accuracy" -- \
  "${mpirun[@]}" -np 1 "$server" --servers 1 --rule-from-workers : -np 2 "$train" --servers 1 "${small[@]}"
# A worker that reaches the PMIx exchange past the servers' --launch-timeout (a Python worker importing
# torch first) is waited for, with a warning: the server gave up at its timeout and ended the launch.
expect_ok mpirun-late-worker "the PMIx address exchange still lacks some of the job's 2 ranks after 1 s" \
  "final test accuracy" -- \
  "${mpirun[@]}" -np 1 "$server" --servers 1 --rule-from-workers --launch-timeout 1 : \
  -np 1 bash -c 'sleep 4; exec "$0" "$@"' "$train" --servers 1 "${small[@]}"
# Every rank serves its metrics on the port given plus its rank: no two collide.
mport=$(free_port 3)  # ranks 0-2 listen on mport+rank
expect_ok mpirun-metrics "metrics at http://127.0.0.1:$mport/metrics" "final test accuracy" -- \
  "${mpirun[@]}" -x RDMAPS_SECRET -np 3 "$train" --servers 1 --metrics "127.0.0.1:$mport" "${small[@]}"
expect_ok mpirun-pytorch '"test_accuracy"' "rdmaps.torch: server 0 done" -- \
  "${mpirun[@]}" -np 3 /usr/bin/python3 "$source"/examples/torch_fashion_mnist.py --epochs 0.5 --expect-accuracy 0.7
expect_ok mpirun-server-and-pytorch '"test_accuracy"' "rdmaps-server: done" -- \
  "${mpirun[@]}" -np 1 "$server" --servers 1 --rule-from-workers : \
  -np 2 /usr/bin/python3 "$source"/examples/torch_fashion_mnist.py --epochs 0.5 --expect-accuracy 0.7

echo "== srun (one-node Slurm $(dpkg-query -W -f='${Version}' slurm-wlm 2>/dev/null))"
# A Slurm of its own needs root (slurmd runs steps as their user): said and
# left out for anyone else, as the network-fault tests do, not failed.
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: the srun cases need root for a one-node Slurm; run the tests as root to include them"
elif slurm_env=$("$source"/tests/launch/slurm_one_node.sh start "$slurm_dir") && eval "$slurm_env"; then
  expect_ok srun-pmix "addresses through PMIx" "(SLURM_PROCID): worker 2 of 3" "final test accuracy" -- \
    srun -n 4 --overcommit --mpi=pmix "$train" --servers 1 "${small[@]}"
  port=$(free_port)
  # At the step's first node (SLURM_STEP_NODELIST), where task 0 runs.
  expect_ok srun-rendezvous "addresses through the rendezvous at $(hostname -s):$port" "final test accuracy" -- \
    env MASTER_PORT="$port" srun -n 4 --overcommit --mpi=none "$train" --servers 1 "${small[@]}"
  expect_ok srun-pytorch '"test_accuracy"' -- \
    srun -n 3 --overcommit --mpi=pmix /usr/bin/python3 "$source"/examples/torch_fashion_mnist.py --epochs 0.5 \
    --expect-accuracy 0.7
  # rdmaps-server and PyTorch workers without PMIx: both take the rendezvous at
  # MASTER_PORT (the workers spoke torch's TCPStore there and waited 300 s).
  port=$(free_port)
  printf '0 %s --servers 1 --rule-from-workers\n1-2 /usr/bin/python3 %s --epochs 0.5 --expect-accuracy 0.7\n' \
    "$server" "$source"/examples/torch_fashion_mnist.py > "$slurm_dir/multi-prog.conf"
  expect_ok srun-server-and-pytorch-rendezvous '"test_accuracy"' "rdmaps-server: done" -- \
    env MASTER_PORT="$port" srun -n 3 --overcommit --mpi=none --multi-prog "$slurm_dir/multi-prog.conf"
  "$source"/tests/launch/slurm_one_node.sh stop "$slurm_dir"
else
  fail "the one-node Slurm did not start"
fi

echo "== python3 -m rdmaps.launch (torchrun's variables, the MASTER_ADDR rendezvous)"
expect_ok rdmaps-launch "addresses through the rendezvous at 127.0.0.1" "final test accuracy" -- \
  /usr/bin/python3 -m rdmaps.launch -n 3 --no-python "$train" --servers 1 "${small[@]}"

# A launcher inside a PMIx launch: rdmaps.launch's RANK/WORLD_SIZE describe
# the processes, which share mpirun's one PMIx rank, so the rendezvous carries
# the addresses (this failed with "two launchers disagree" before).
expect_ok mpirun-rdmaps-launch "addresses through the rendezvous at 127.0.0.1" "final test accuracy" -- \
  "${mpirun[@]}" -x RDMAPS_SECRET -x PYTHONPATH -x UCX_NET_DEVICES -np 1 \
  /usr/bin/python3 -m rdmaps.launch -n 3 --no-python "$train" --servers 1 "${small[@]}"

echo "== wrong launches"
expect_error more-servers-than-ranks "world size 2 (openmpi) leaves no worker beside 2 server(s)" \
  "${mpirun[@]}" -x RDMAPS_SECRET -np 2 "$train" --servers 2 "${small[@]}"
expect_error no-secret "its ranks need a shared secret" \
  env -u RDMAPS_SECRET "${mpirun[@]}" -np 3 "$train" "${small[@]}"
expect_error server-on-a-worker-rank "rdmaps-server runs on the first 1 rank(s) only" \
  "${mpirun[@]}" -x RDMAPS_SECRET -np 2 "$server" --servers 1
expect_error workers-disagree "differs from the 2 worker ranks of this launch" \
  "${mpirun[@]}" -x RDMAPS_SECRET -np 3 "$train" --workers 4 "${small[@]}"
# A worker count exported to every rank counts like the flag (it was ignored).
expect_error workers-env-disagrees "RDMAPS_WORKERS: 5 differs from the 2 worker ranks of this launch" \
  "${mpirun[@]}" -x RDMAPS_SECRET -x RDMAPS_WORKERS=5 -np 1 "$server" --servers 1 : -np 2 "$train" --servers 1 \
  "${small[@]}"
# A RANK exported by hand under mpirun: every process thinks it is rank 0.
expect_error launchers-disagree "two launchers disagree about this process: PMIx says rank" \
  "${mpirun[@]}" -x RDMAPS_SECRET -x RANK=0 -x WORLD_SIZE=3 -np 3 "$train" "${small[@]}"
# Ranks started with different --servers in one PMIx launch (rank 0 with 1, the others with 2).
expect_error pmix-servers-disagree "and 2 server(s), rank 0 with 3 and 1: one job, one launch" \
  "${mpirun[@]}" -x RDMAPS_SECRET -np 1 "$train" --servers 1 "${small[@]}" : \
  -x RDMAPS_SECRET -np 2 "$train" --servers 2 "${small[@]}"
# Ctrl-C in a Python rank while the PMIx exchange waits for a rank that never
# comes: PMIx_Fence held it until its timeout (60 s here, 300 s by default).
cat >"$work/interrupted_fence.py" <<'PY'
import os, signal, sys, threading, time
from rdmaps import _rdmaps
if os.environ["OMPI_COMM_WORLD_RANK"] != "0":
    time.sleep(90)  # never reaches the exchange
    sys.exit(0)
directory = _rdmaps._ServerDirectory(dict(os.environ), 1, 60.0, [])
threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
start = time.monotonic()
try:
    directory.exchange("127.0.0.1:4000")
except KeyboardInterrupt:
    took = time.monotonic() - start
    print(("Ctrl-C ended the PMIx exchange" if took < 10 else "Ctrl-C waited for the PMIx exchange") +
          f" after {took:.1f} s", flush=True)
    sys.exit(1)
PY
expect_error interrupted-pmix-exchange "Ctrl-C ended the PMIx exchange" \
  "${mpirun[@]}" -x PYTHONPATH -np 2 /usr/bin/python3 "$work/interrupted_fence.py"
port=$(free_port)
expect_error unreachable-rendezvous "could not reach the rendezvous at 127.0.0.1:$port" \
  env RDMAPS_RANK=1 RDMAPS_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" "$train" --launch-timeout 2

[ $failures -eq 0 ] && echo "all launches behaved" && exit 0
echo "$failures launch check(s) failed"
exit 1
