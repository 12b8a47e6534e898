#!/usr/bin/env bash
# What checkpointing costs the hot path: rdmaps-perf ps without checkpoints,
# with checkpoints to tmpfs and to disk every 500 ms, interleaved.
# usage: bench/checkpoint_cost.sh RDMAPS_PERF [REPEATS] [DISK_DIR]
set -euo pipefail
perf=$1 repeats=${2:-3} disk=${3:-/var/tmp}/rdmaps-checkpoint-cost
export UCX_NET_DEVICES=lo
tmpfs=/dev/shm/rdmaps-checkpoint-cost
for rep in $(seq "$repeats"); do
  for mode in none tmpfs disk; do
    extra=()
    case $mode in
      tmpfs) rm -rf "$tmpfs"; extra=(--checkpoint-dir "$tmpfs" --checkpoint-every 500ms) ;;
      disk) rm -rf "$disk"; extra=(--checkpoint-dir "$disk" --checkpoint-every 500ms) ;;
    esac
    log=$(mktemp)
    j=$("$perf" ps --transport shm --floats 16000000 --rule dc-asgd-a --server-threads 1 --iters 60 --json \
         "${extra[@]}" 2>"$log" | tail -1)
    written=$(grep -c "checkpoint .* written" "$log" || true)
    took=$(sed -n 's/.*updates, \([0-9.]*\) ms$/\1/p' "$log" | tr '\n' ' ')
    echo "$rep $mode checkpoints=$written write_ms=[${took% }] $j"
    rm -f "$log"
  done
done
rm -rf "$tmpfs" "$disk"
