#!/usr/bin/env bash
# examples/torch_fashion_mnist.py: samples/s of rdmaps.torch (1 server + W
# workers) against torch.distributed gloo all-reduce DDP (W workers) and the
# compute bound (W x one process training alone), interleaved repetitions.
#   bench/compare_torch_gloo.sh BUILD_DIR [WORKERS] [REPS] [EPOCHS]
set -euo pipefail
build=${1:?build dir}; workers=${2:-2}; reps=${3:-3}; epochs=${4:-4}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/$build/python" UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
py=/usr/bin/python3
example=examples/torch_fashion_mnist.py

# Sum of the workers' samples/s, and worker 0's test accuracy.
summarize() { "$py" -c '
import json, sys
rs = [json.loads(l.split("result ", 1)[1]) for l in sys.stdin if "result {" in l]
acc = next((r["test_accuracy"] for r in rs if "test_accuracy" in r), float("nan"))
total = sum(r["samples_per_s"] for r in rs)
print(f"{total:.0f} {acc:.4f}")'; }

run() {  # label, processes, extra flags
  local label=$1 n=$2; shift 2
  read -r sps acc < <("$py" -m rdmaps.launch -n "$n" "$example" --epochs "$epochs" "$@" 2>&1 | summarize)
  printf "%4s %-28s %10s %8s" "$r" "$label" "$sps" "$acc"
  echo "$sps" > "$tmp/$label"
}

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf "# %s workers, %s epochs, batch 32, MLP 784-256-128-10, torch threads 1; samples/s summed over workers\n" \
  "$workers" "$epochs"
printf "%4s %-28s %10s %8s %s\n" rep run samples_s test_acc "vs gloo / vs bound"
for ((r = 1; r <= reps; r++)); do
  read -r one _ < <("$py" "$example" --backend local --epochs "$epochs" 2>&1 | summarize)
  bound=$((one * workers))
  printf "%4s %-28s %10s %8s\n" "$r" "bound ($workers x local)" "$bound" "-"
  run gloo-ddp "$workers" --backend gloo; echo
  gloo=$(cat "$tmp/gloo-ddp")
  for variant in "ssp2-dc:--staleness 2 --dc adaptive" "bsp:--staleness 0 --dc none" "async-dc:--staleness inf --dc adaptive"; do
    label="rdmaps-${variant%%:*}"
    # shellcheck disable=SC2086
    run "$label" $((workers + 1)) --backend rdmaps ${variant#*:}
    s=$(cat "$tmp/$label")
    printf " %.2f / %.2f\n" "$(echo "$s / $gloo" | bc -l)" "$(echo "$s / $bound" | bc -l)"
  done
done
