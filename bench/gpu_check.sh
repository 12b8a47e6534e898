#!/usr/bin/env bash
# Everything this project measures on a GPU, in one command, for a machine
# with a GPU (docs/benchmarks.md "GPU"): the GPU test suite, rdmaps-perf gpu
# over shm and tcp (kernels against the device copy; pushes from device memory
# against pinned host memory at 64 M and 1 M floats, with a sweep of the
# staged path's ring depth), the GPU shard against the host server
# (rdmaps-perf ps), and a short 4-worker rdmaps-train with and without
# --gpu-shard. Writes OUT/gpu_check.json (every figure) and OUT/gpu_check.log.
#
#   bench/gpu_check.sh [--bin DIR] [--data DIR] [--out DIR] [--budget S] [--quick]
#
# --bin: where rdmaps-perf, rdmaps-train, rdmaps-info and gpu_tests are (a
#   build tree, its bench/ src/ tests/ folders are searched; or one folder);
#   default: the build/ next to this script, else PATH.
# --data: Fashion-MNIST for rdmaps-train (default: its own default).
# --budget: seconds for everything (default 540, inside one 600 s device
#   call); each run's limit is cut to what is left, and runs past it are
#   reported as not run.
# --quick: fewer repetitions (the CI check of this script uses it).
# About 3 minutes on an H200 host. Exits non-zero if a test or a run failed
# or was not run; the JSON then says which.
set -uo pipefail
out="gpu-check-out" budget=540
source "$(dirname "$0")/check_args.sh"
[ -z "$parts" ] || { echo "gpu_check.sh: --parts is scale_check.sh's (see --help)" >&2; exit 2; }
perf=$(find_tool rdmaps-perf) train=$(find_tool rdmaps-train) info=$(find_tool rdmaps-info) tests=$(find_tool gpu_tests)
for t in perf train info tests; do
  [ -n "${!t}" ] || { echo "gpu_check.sh: cannot find the $t program under '${bin:-PATH}' (--bin DIR)" >&2; exit 2; }
done
# This run's figures only: a run skipped or crashed left an earlier run's file
# there, which the JSON below took as this run's.
rm -rf "$out/runs" "$out/gpu_check.json"
mkdir -p "$out/runs"
out=$(cd "$out" && pwd)
log=$out/gpu_check.log
: >"$log"
iters=20 epochs=2
[ $quick = 1 ] && iters=3 epochs=1
data_flag=()
[ -n "$data" ] && data_flag=(--data "$data")
failed=()

# run NAME TIMEOUT COMMAND...: stdout to runs/NAME.out, everything to the log.
run() {
  local name=$1 limit
  limit=$(time_left "$2")
  shift 2
  spent "$name" "$limit" && return
  echo "== $name: $*" | tee -a "$log"
  current=$name
  local start=$SECONDS
  # In the background and waited for: a TERM (the caller's limit) runs the trap below at once, which stops it.
  timeout -k 10 "$limit" "$@" >"$out/runs/$name.out" 2>>"$log" &
  running=$!
  wait "$running"
  local status=$?
  running=""
  cat "$out/runs/$name.out" >>"$log"
  echo "== $name: exit $status after $((SECONDS - start)) s" | tee -a "$log"
  [ $status -eq 0 ] || failed+=("$name (exit $status)")
}

running="" current=""
run info 60 "$info" --json
probe_limit=$(time_left 60)
timeout -k 10 "$((probe_limit > 0 ? probe_limit : 1))" "$perf" gpu --floats 1K --push-floats 1K --iters 1 \
  >/dev/null 2>>"$log"
probe=$?
if [ $probe -eq 77 ]; then
  echo "gpu_check: no CUDA device on this machine (see $log): nothing to measure" | tee -a "$log"
  exit 77
fi
[ $probe -eq 0 ] || failed+=("probe: rdmaps-perf gpu on 1K floats (exit $probe)")
# One JSON: each run's own JSON object (or its failure), the test results and the machine.
collect() {
python3 - "$out" "${failed[@]}" <<'PY'
import json, os, sys
out, failed = sys.argv[1], sys.argv[2:]
runs = {}
for name in sorted(os.listdir(os.path.join(out, "runs"))):
    path = os.path.join(out, "runs", name)
    if not name.endswith(".out"):
        continue
    text = open(path).read().strip()
    try:
        runs[name[:-4]] = json.loads(text.splitlines()[-1]) if text else None
    except (ValueError, IndexError):
        runs[name[:-4]] = {"unparsed": text[-2000:]}
tests = os.path.join(out, "runs", "gpu_tests.json")
if os.path.exists(tests):
    t = json.load(open(tests))
    runs["gpu_tests"] = {"tests": t.get("tests"), "failures": t.get("failures"), "disabled": t.get("disabled"),
                         "skipped": sum(1 for s in t.get("testsuites", []) for c in s.get("testsuite", [])
                                        if c.get("result") == "SKIPPED")}
json.dump({"failed": failed, "runs": runs}, open(os.path.join(out, "gpu_check.json"), "w"), indent=1)
print(f"gpu_check: {len(runs)} runs, {len(failed)} failed -> {out}/gpu_check.json, {out}/gpu_check.log")
PY
}

# The figures so far into gpu_check.json, also where a time limit stops this
# (timeout's TERM): they were collected only at the end, and lost with it.
trap 'echo "gpu_check: stopped: gpu_check.json holds the runs so far" | tee -a "$log" >&2
  if [ -n "$running" ]; then
    kill -TERM "$running" 2>/dev/null; wait "$running" 2>/dev/null  # gone before its files are collected
    failed+=("$current (stopped by TERM; the runs after it not run)")
  fi
  collect; exit 124' TERM
# Each run's own cap is well inside the budget: one that hangs (the GPU tests
# run code no GPU has run yet) leaves the rest their time.
run gpu_tests 90 "$tests" --gtest_output=json:"$out/runs/gpu_tests.json"
for transport in shm tcp; do
  run "perf_gpu_$transport" 60 "$perf" gpu --json --transport "$transport" --iters "$iters"
done
# The figures the docs await first (the GPU shard, a --gpu-shard training run),
# then the sweep: a budget spent leaves the sweep's runs "not run".
for shard in host gpu; do
  flags=()
  [ $shard = gpu ] && flags=(--gpu-shard)
  run "perf_ps_$shard" 60 "$perf" ps --json --transport shm --rule dc-asgd-a --workers 4 --floats 16M \
    --iters "$((iters / 4 + 2))" "${flags[@]}"
  run "train_$shard" 60 "$train" --json --workers 4 --epochs "$epochs" --out "$out/runs/train_$shard" \
    "${data_flag[@]}" "${flags[@]}"
done
# The staged push over tcp: which ring depth keeps the socket busy, at the
# issue's two sizes (64 M and 1 M floats). Only these runs' push rows count:
# their kernel rows use --floats 1M (4 MiB, inside an H200's L2), so they are
# no kernel figure; the 64 M kernel rows are perf_gpu_*'s.
for floats in 64M 1M; do
  for depth in 3 8 16; do
    run "push_tcp_${floats}_depth$depth" 30 "$perf" gpu --json --transport tcp --floats 1M --push-floats "$floats" \
      --staging-depth "$depth" --iters "$iters"
  done
done
collect || failed+=("collecting the figures into gpu_check.json")
[ ${#failed[@]} -eq 0 ] || { printf 'gpu_check: failed: %s\n' "${failed[@]}"; exit 1; }
