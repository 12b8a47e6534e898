#!/usr/bin/env bash
# A lent GPU machine's one call: bench/gpu_check.sh, then bench/scale_check.sh,
# from a bundle (bin/, lib/, data/ and env.sh: docs/benchmarks.md
# "Reproduce"), inside one budget, and what they wrote packed into at most six
# files, two folders deep at most, for a machine that returns only a few
# files from OUT:
#   machine.txt       cores, memory, GPU, kernel, the bundle's size
#   gpu_check.json    every GPU figure; gpu_check.log its runs' output
#   scale_check.md    the multi-core tables; scale_check.log its runs' output
#   raw.tgz           everything else both wrote (runs, JSON lines, plots)
#
#   bench/device_check.sh --bundle DIR [--out DIR] [--budget S] [--quick]
#
# --out: default $OUT (the device machine's return folder), else device-check-out.
# --budget: seconds for both (default 550, inside one 600 s call): the GPU
#   check gets two fifths of them, at most 210, the multi-core check the rest less 15 for
#   packing.
# --quick: both checks' --quick (this script's CI check).
# Exits non-zero if either check failed; the files say which part.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bundle="" out=${OUT:-device-check-out} budget=550 quick=()
while [ $# -gt 0 ]; do
  case $1 in
    --bundle) bundle=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --quick) quick=(--quick); shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "device_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$bundle" ] && [ -d "$bundle/bin" ] ||
  { echo "device_check.sh: --bundle '$bundle' is not a bundle (no bin/ folder in it)" >&2; exit 2; }
[[ $budget =~ ^[1-9][0-9]*$ ]] && [ "$budget" -ge 60 ] ||
  { echo "device_check.sh: --budget '$budget' is not a whole number of seconds, 60 or more" >&2; exit 2; }
bundle=$(cd "$bundle" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/rdmaps-device-check.XXXXXX")
trap 'rm -rf "$work"' EXIT

{
  echo "date: $(date -u +%FT%TZ)"
  echo "cores: $(nproc) (of $(nproc --all))"
  lscpu 2>/dev/null | grep -E '^(Model name|Socket|Thread|Core|NUMA node\(s\))' || true
  free -g 2>/dev/null | head -2 || true
  nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none"
  uname -srm
  echo "bundle: $(du -sh "$bundle" 2>/dev/null | cut -f1)"
} >"$out/machine.txt" 2>&1

status=0
gpu_budget=$((budget * 2 / 5 < 210 ? budget * 2 / 5 : 210))
"$here/gpu_check.sh" --bin "$bundle" --out "$work/gpu" --budget "$gpu_budget" "${quick[@]}" \
  >"$work/gpu_check.txt" 2>&1
gpu_status=$?
# 77: no GPU here; the multi-core figures still come.
[ $gpu_status -eq 0 ] || [ $gpu_status -eq 77 ] || status=1
left=$((budget - SECONDS - 15))
if [ $left -ge 30 ]; then
  "$here/scale_check.sh" --bin "$bundle" --out "$work/scale" --budget "$left" "${quick[@]}" \
    >"$work/scale_check.txt" 2>&1 || status=1
else
  echo "device_check.sh: scale_check not run: $left s of the budget left" | tee "$work/scale_check.txt"
  status=1
fi

for f in gpu/gpu_check.json gpu/gpu_check.log scale/scale_check.md scale/scale_check.log; do
  [ -f "$work/$f" ] && cp "$work/$f" "$out/"
done
echo "gpu_check exit $gpu_status; scale_check: see scale_check.md" >>"$out/machine.txt"
tar czf "$out/raw.tgz" -C "$work" . 2>/dev/null || status=1
echo "device_check.sh: exit $status after $SECONDS s -> $out ($(ls "$out" | tr '\n' ' '))"
exit $status
