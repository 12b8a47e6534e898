#!/usr/bin/env bash
# examples/torch_fashion_mnist.py: samples/s of rdmaps.torch (1 server + W
# workers) against torch.distributed gloo all-reduce DDP (W workers) and the
# compute bound (W x one process training alone), interleaved repetitions.
#   bench/compare_torch_gloo.sh BUILD_DIR [WORKERS] [REPS] [EPOCHS]
set -euo pipefail
build=${1:?build dir}; workers=${2:-2}; reps=${3:-3}; epochs=${4:-4}
cd "$(dirname "$0")/.."
case $build in /*) ;; *) build=$PWD/$build ;; esac  # relative to the repository, or given whole
export PYTHONPATH="$build/python" UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
py=/usr/bin/python3
example=${EXAMPLE:-examples/torch_fashion_mnist.py}  # EXAMPLE: another program printing the same results

# Sum of the workers' samples/s, and worker 0's test accuracy, from a log of
# WORKERS results; fewer is an error (a dead worker's half was reported as
# the rate, a failed run as 0).
summarize() {  # WORKERS LOG LABEL
  "$py" -c '
import json, sys
n, log, label = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rs = [json.loads(l.split("result ", 1)[1]) for l in open(log) if "result {" in l]
if len(rs) != n:
    sys.exit(f"compare_torch_gloo.sh: {label}: {len(rs)} of {n} workers gave a result (see {log})")
acc = next((r["test_accuracy"] for r in rs if "test_accuracy" in r), float("nan"))
total = sum(r["samples_per_s"] for r in rs)
print(f"{total:.0f} {acc:.4f}")' "$@"
}

run() {  # label, processes, workers, extra flags
  local label=$1 n=$2 w=$3 log result; shift 3
  log="$tmp/$label.log"
  "$py" -m rdmaps.launch -n "$n" "$example" --epochs "$epochs" "$@" >"$log" 2>&1 ||
    { echo "compare_torch_gloo.sh: $label failed:" >&2; tail -n 5 "$log" >&2; exit 1; }
  result=$(summarize "$w" "$log" "$label") || exit 1
  read -r sps acc <<<"$result"
  printf "%4s %-28s %10s %8s" "$r" "$label" "$sps" "$acc"
  echo "$sps" > "$tmp/$label"
}

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf "# %s workers, %s epochs, batch 32, MLP 784-256-128-10, torch threads 1; samples/s summed over workers\n" \
  "$workers" "$epochs"
printf "%4s %-28s %10s %8s %s\n" rep run samples_s test_acc "vs gloo / vs bound"
for ((r = 1; r <= reps; r++)); do
  "$py" "$example" --backend local --epochs "$epochs" >"$tmp/local.log" 2>&1 ||
    { echo "compare_torch_gloo.sh: the local run failed:" >&2; tail -n 5 "$tmp/local.log" >&2; exit 1; }
  result=$(summarize 1 "$tmp/local.log" local) || exit 1
  read -r one _ <<<"$result"
  bound=$((one * workers))
  printf "%4s %-28s %10s %8s\n" "$r" "bound ($workers x local)" "$bound" "-"
  run gloo-ddp "$workers" "$workers" --backend gloo; echo
  gloo=$(cat "$tmp/gloo-ddp")
  for variant in "ssp2-dc:--staleness 2 --dc adaptive" "bsp:--staleness 0 --dc none" "async-dc:--staleness inf --dc adaptive"; do
    label="rdmaps-${variant%%:*}"
    # shellcheck disable=SC2086
    run "$label" $((workers + 1)) "$workers" --backend rdmaps ${variant#*:}
    s=$(cat "$tmp/$label")
    printf " %.2f / %.2f\n" "$(echo "$s / $gloo" | bc -l)" "$(echo "$s / $bound" | bc -l)"
  done
done
