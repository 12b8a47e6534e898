#!/usr/bin/env bash
# What bench/scale_check.sh and bench/gpu_check.sh report holds where a
# review found it did not (their real runs are the bench-scale-check and
# gpu-check tests):
#  - scale_check counts a training run that printed its summary and then
#    failed (a summary comes before the outputs are written and before
#    --expect-accuracy's exit 3) as failed, not as a good run;
#  - gpu_check's JSON holds this invocation's runs only: a run skipped or
#    crashed left an earlier invocation's file, taken as this one's.
#   check_check_scripts.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$(realpath "$1")
source=$(realpath "$2")
work=$(mktemp -d /tmp/rdmaps-check-scripts.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "check_check_scripts: FAIL: $*" >&2; exit 1; }

mkdir "$work/bin"
ln -s "$build/bench/rdmaps-perf" "$work/bin/rdmaps-perf"
cat >"$work/bin/rdmaps-train" <<'SH'
#!/bin/sh
echo '{"final_test_accuracy":0.5,"seconds":1.0}'
echo "rdmaps-train: final test accuracy 50.00 % is below --expect-accuracy" >&2
exit 3
SH
chmod +x "$work/bin/rdmaps-train"
"$source/bench/scale_check.sh" --bin "$work/bin" --out "$work/scale" --quick >"$work/scale.out" 2>&1
status=$?
[ $status -ne 0 ] || fail "scale_check exited 0 with a training run that exited 3: $(cat "$work/scale.out")"
grep -q "failed (exit 3" "$work/scale/scale_check.md" || fail "the table does not say the run failed: $(cat "$work/scale/scale_check.md")"
echo "ok: scale_check counts a run that printed its summary and exited 3 as failed (exit $status)"

# Where a GPU is, gpu_check runs everything (minutes): the gpu-check test does that.
"$build/bench/rdmaps-perf" gpu --floats 1K --push-floats 1K --iters 1 >/dev/null 2>&1
if [ $? -ne 77 ]; then
  echo "ok: gpu_check's leftovers not checked here: this machine has a GPU (the gpu-check test runs it)"
  exit 0
fi
mkdir -p "$work/gpu/runs"
echo '{"bogus":1}' >"$work/gpu/runs/bogus.out"
echo '{"failed":[],"runs":{"bogus":{}}}' >"$work/gpu/gpu_check.json"
"$source/bench/gpu_check.sh" --bin "$build" --out "$work/gpu" --quick >"$work/gpu.out" 2>&1
status=$?
[ ! -e "$work/gpu/runs/bogus.out" ] || fail "an earlier invocation's run is still under runs/ (exit $status)"
if [ -e "$work/gpu/gpu_check.json" ] && grep -q bogus "$work/gpu/gpu_check.json"; then
  fail "gpu_check.json still holds an earlier invocation's run (exit $status)"
fi
echo "ok: gpu_check keeps no earlier invocation's runs (exit $status: 77 where no GPU is)"
