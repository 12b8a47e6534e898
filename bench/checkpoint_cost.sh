#!/usr/bin/env bash
# What checkpointing costs the hot path: rdmaps-perf ps without checkpoints,
# with checkpoints to tmpfs and to disk every 500 ms, interleaved.
# usage: bench/checkpoint_cost.sh RDMAPS_PERF [REPEATS] [DISK_DIR]
set -euo pipefail
perf=${1:?usage: bench/checkpoint_cost.sh RDMAPS_PERF [REPEATS] [DISK_DIR]} repeats=${2:-3}
[[ -x $perf ]] || { echo "checkpoint_cost.sh: $perf not found (build it first)" >&2; exit 1; }
export UCX_NET_DEVICES=lo
# This run's own folders (fixed names: two runs at once deleted each other's checkpoints).
disk_parent=$(mktemp -d "${3:-/var/tmp}/rdmaps-checkpoint-cost.XXXXXX")
tmpfs_parent=$(mktemp -d /dev/shm/rdmaps-checkpoint-cost.XXXXXX)
disk=$disk_parent/ckpt tmpfs=$tmpfs_parent/ckpt
log=$(mktemp)  # each run's stderr: its checkpoint lines, or why it failed
# The checkpoints are 128 MB each: gone however the script ends.
trap 'rm -rf "$tmpfs_parent" "$disk_parent" "$log" "$log.rows"' EXIT
for rep in $(seq "$repeats"); do
  for mode in none tmpfs disk; do
    extra=()
    case $mode in
      tmpfs) rm -rf "$tmpfs"; extra=(--checkpoint-dir "$tmpfs" --checkpoint-every 500ms) ;;
      disk) rm -rf "$disk"; extra=(--checkpoint-dir "$disk" --checkpoint-every 500ms) ;;
    esac
    j=$("$perf" ps --transport shm --floats 16000000 --rule dc-asgd-a --server-threads 1 --iters 60 --json \
         "${extra[@]}" 2>"$log" | tail -1) ||
      { echo "checkpoint_cost.sh: rdmaps-perf ps failed (checkpoints: $mode, repeat $rep):" >&2; tail -n 5 "$log" >&2; exit 1; }
    written=$(grep -c "checkpoint .* written" "$log" || true)
    # A run that wrote none costs nothing: its ratio would read as "checkpoints are free".
    if [[ $mode != none && $written -eq 0 ]]; then
      echo "checkpoint_cost.sh: no checkpoint written (checkpoints: $mode, repeat $rep):" >&2; tail -n 5 "$log" >&2; exit 1
    fi
    took=$(sed -n 's/.*updates, \([0-9.]*\) ms$/\1/p' "$log" | tr '\n' ' ')
    echo "$rep $mode checkpoints=$written write_ms=[${took% }] $j" | tee -a "$log.rows"
  done
done
# The ratio docs/benchmarks.md quotes: per mode, the median over repeats of its
# iteration p50 over the "none" run's of the same repeat (min and max beside).
/usr/bin/python3 - "$log.rows" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    rep, mode = line.split()[:2]
    rows[(rep, mode)] = json.loads(line[line.index("{"):])["iter_p50_s"]
for mode in ("tmpfs", "disk"):
    ratios = [p / rows[(rep, "none")] for (rep, m), p in sorted(rows.items()) if m == mode]
    print(f"{mode}: iteration p50 / none's of the same repeat: median {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}, {len(ratios)} repeats)")
PY
