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
#                         [--skip-gpu] [--scale-parts LIST]
#
# --out: default $OUT (the device machine's return folder), else device-check-out.
# --budget: seconds for both (default 480: a 540 s call leaves a 15-minute
#   lease about 4 minutes to rerun a part on the warm machine): the GPU check
#   gets two fifths of them, at most 210, the multi-core check the rest less
#   15 for packing.
# Each check's files are copied into OUT as soon as it ends, and raw.tgz is
# packed on any exit: a call cut short still returns what finished. The last
# lines of stdout repeat the failures and the multi-core tables, for a reply
# whose files did not come back.
# --quick: both checks' --quick (this script's CI check); no GPU is then no failure.
# --skip-gpu, --scale-parts LIST: a second call on the warm machine, for what
#   the first one's time left unrun: its last line names the flags (the
#   multi-core parts' caps sum to more than their share of one call).
# Exits non-zero if either check failed; the files say which part.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bundle="" out=${OUT:-device-check-out} budget=480 quick=() skip_gpu=0 scale_parts=()
while [ $# -gt 0 ]; do
  # A flag of a value, last: "$2: unbound variable" from bash, not which flag.
  case $1 in --bin | --budget | --data | --out | --bundle | --scale-parts) [ $# -ge 2 ] ||
    { echo "device_check.sh: $1 needs a value (see --help)" >&2; exit 2; } ;;
  esac
  case $1 in
    --bundle) bundle=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --quick) quick=(--quick); shift ;;
    --skip-gpu) skip_gpu=1; shift ;;
    --scale-parts) scale_parts=(--parts "$2"); shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "device_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$bundle" ] && [ -d "$bundle/bin" ] ||
  { echo "device_check.sh: --bundle '$bundle' is not a bundle (no bin/ folder in it)" >&2; exit 2; }
for p in rdmaps-perf rdmaps-train; do  # the rest, missing, each check names
  [ -x "$bundle/bin/$p" ] || { echo "device_check.sh: --bundle '$bundle' has no bin/$p" >&2; exit 2; }
done
[[ $budget =~ ^[1-9][0-9]*$ ]] && [ "$budget" -ge 60 ] ||
  { echo "device_check.sh: --budget '$budget' is not a whole number of seconds, 60 or more" >&2; exit 2; }
bundle=$(cd "$bundle" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/rdmaps-device-check.XXXXXX")
# What both wrote goes back however this ends (a call cut short at its limit too).
trap 'tar czf "$out/raw.tgz" -C "$work" . 2>/dev/null; rm -rf "$work"' EXIT
# collect FILES...: each one there into OUT, now (a later step may not end).
collect() {
  local f
  for f in "$@"; do [ -f "$work/$f" ] && cp "$work/$f" "$out/"; done
  return 0
}
# Each check runs in the background and is waited for, so that this trap runs
# at once (a trap waits for a foreground child) and stops the check with it.
# The check's own TERM handler writes what it finished (gpu_check.json): it is
# given 10 s for that before its files are collected and packed.
child=""
trap 'echo "device_check.sh: stopped after $SECONDS s; what finished is in $out" >&2
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null
    (sleep 10; kill -KILL "$child") >/dev/null 2>&1 &
    killer=$!
    wait "$child"
    kill "$killer" 2>/dev/null
  fi
  collect gpu/gpu_check.json gpu/gpu_check.log scale/scale_check.md scale/scale_check.log
  exit 124' TERM INT

{
  echo "date: $(date -u +%FT%TZ)"
  echo "cores: $(nproc) (of $(nproc --all))"
  lscpu 2>/dev/null | grep -E '^(Model name|Socket|Thread|Core|NUMA node\(s\))' || true
  free -g 2>/dev/null | head -2 || true
  nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none"
  uname -srm
  echo "bundle: $(du -sh "$bundle" 2>/dev/null | cut -f1)"
  # Without the dataset every training run fails: said here, before them.
  n=$(find "$bundle/data" -name '*-idx[13]-ubyte*' 2>/dev/null | wc -l)
  echo "bundle data: $n of the 4 Fashion-MNIST files$([ "$n" -ge 4 ] || echo ': training runs will fail')"
} >"$out/machine.txt" 2>&1

status=0
gpu_budget=$((budget * 2 / 5 < 210 ? budget * 2 / 5 : 210))
if [ $skip_gpu = 1 ]; then
  gpu_status=0
  echo "gpu_check: not run (--skip-gpu)" | tee "$work/gpu_check.txt" >>"$out/machine.txt"
else
  "$here/gpu_check.sh" --bin "$bundle" --out "$work/gpu" --budget "$gpu_budget" "${quick[@]}" \
    >"$work/gpu_check.txt" 2>&1 &
  child=$!
  wait "$child"
  gpu_status=$?
  child=""
  collect gpu/gpu_check.json gpu/gpu_check.log
  echo "gpu_check exit $gpu_status after $SECONDS s" >>"$out/machine.txt"
fi
# 77: no GPU seen. The multi-core figures still come, but on the machine lent
# for its GPU the call failed its purpose (a driver too old for the build, a
# device not passed in): said, and the exit is non-zero. --quick (CI, where
# no GPU is) takes it as success.
if [ $gpu_status -eq 77 ] && [ ${#quick[@]} -eq 0 ]; then
  echo "gpu_check: no CUDA device seen: this call's GPU figures are missing (gpu_check.log says why)" |
    tee -a "$out/machine.txt" >>"$work/gpu_check.txt"
  status=1
elif [ $gpu_status -ne 0 ] && [ $gpu_status -ne 77 ]; then
  status=1
fi
left=$((budget - SECONDS - 15))
if [ $left -ge 30 ]; then
  "$here/scale_check.sh" --bin "$bundle" --out "$work/scale" --budget "$left" "${quick[@]}" "${scale_parts[@]}" \
    >"$work/scale_check.txt" 2>&1 &
  child=$!
  wait "$child" || status=1
  child=""
  collect scale/scale_check.md scale/scale_check.log
else
  echo "device_check.sh: scale_check not run: $left s of the budget left" | tee "$work/scale_check.txt"
  status=1
fi

echo "scale_check: see scale_check.md; $SECONDS s in all" >>"$out/machine.txt"
# The reply's output tail carries these where its files do not come back.
tail -n 3 "$work/gpu_check.txt" 2>/dev/null
[ -f "$work/scale/scale_check.md" ] && cat "$work/scale/scale_check.md"
tail -n 3 "$work/scale_check.txt" 2>/dev/null
echo "device_check.sh: exit $status after $SECONDS s -> $out ($(ls "$out" | tr '\n' ' ')raw.tgz)"
rest=$(sed -n 's/^scale_check: the time left parts unrun or unfinished: --parts \([0-9,]*\) runs them$/\1/p' \
  "$work/scale_check.txt" 2>/dev/null)
[ -z "$rest" ] || echo "device_check.sh: for the rest, on the warm machine: bench/device_check.sh --bundle $bundle" \
  "--out \"\$OUT\" --skip-gpu --scale-parts $rest --budget SECONDS"
exit $status
