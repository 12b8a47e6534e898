#!/usr/bin/env bash
# What bench/scale_check.sh and bench/gpu_check.sh report holds where a
# review found it did not (their real runs are the bench-scale-check and
# gpu-check tests):
#  - scale_check counts a training run that printed its summary and then
#    failed (a summary comes before the outputs are written and before
#    --expect-accuracy's exit 3) as failed, not as a good run;
#  - gpu_check's JSON holds this invocation's runs only: a run skipped or
#    crashed left an earlier invocation's file, taken as this one's;
#  - bench/device_check.sh, the lent machine's one call, runs both from a
#    bundle (bin/, data/, env.sh) and returns at most six files;
#  - a failed ps_grid cell does not stop the rest of the grid, and a grid
#    its time limit stops still tables what it finished;
#  - bench/bundle_check.sh keeps the programs device_check runs and refuses
#    a bundle without the dataset, a library beyond the base system or UCX's
#    cma module;
#  - device_check stopped by TERM still returns what its check wrote in its
#    own TERM handler, and a second call runs only the parts it is given.
#   check_check_scripts.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$(realpath "$1")
source=$(realpath "$2")
work=$(mktemp -d /tmp/rdmaps-check-scripts.XXXXXX)
trap '[ -z "${rest:-}" ] || kill "$rest" 2>/dev/null; rm -rf "$work"' EXIT
fail() { echo "check_check_scripts: FAIL: $*" >&2; exit 1; }

# A bundle whose programs hang. In the background from the start (its 45 s
# budget overlaps the rest of this script): a multi-core check whose runs hang
# names the parts its time left unrun as the --parts that runs them, and
# device_check passes that on as its second call's flags (checked at the end).
slow=$work/slow-bundle
mkdir -p "$slow/bin" "$slow/data"
printf '#!/bin/sh\necho "{}"\n' >"$slow/bin/rdmaps-info"
printf '#!/bin/sh\ncase "$*" in *"--floats 1K"*) exit 0 ;; esac\nexec sleep 60\n' >"$slow/bin/rdmaps-perf"
printf '#!/bin/sh\n: >"%s"\nexec sleep 60\n' "$work/gpu_tests.started" >"$slow/bin/gpu_tests"
printf '#!/bin/sh\nexec sleep 60\n' >"$slow/bin/rdmaps-train"
chmod +x "$slow/bin/"*
"$source/bench/device_check.sh" --bundle "$slow" --out "$work/rest" --budget 60 --quick --skip-gpu \
  --scale-parts 1,3 >"$work/rest.out" 2>&1 &
rest=$!

# A bundle, as a lent machine gets it (bin/, data/, env.sh): bench/device_check.sh
# runs both checks from it; its env.sh is sourced and its data/ is the default
# --data (without them both checks stopped at once on the lent machine).
bundle=$work/bundle
mkdir -p "$bundle/bin" "$bundle/data"
for tool in bench/rdmaps-perf src/rdmaps-info tests/gpu_tests; do
  [ -x "$build/$tool" ] && ln -s "$build/$tool" "$bundle/bin/"
done
cat >"$bundle/env.sh" <<'SH'
b=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LD_LIBRARY_PATH=$b/lib:$LD_LIBRARY_PATH RDMAPS_DATA=$b/data
SH
cat >"$bundle/bin/rdmaps-train" <<SH
#!/bin/sh
echo "\$*" >>"$work/train-args"
echo '{"final_test_accuracy":0.5,"seconds":1.0}'
echo "rdmaps-train: final test accuracy 50.00 % is below --expect-accuracy" >&2
exit 3
SH
chmod +x "$bundle/bin/rdmaps-train"
# No LD_LIBRARY_PATH, as on the lent machine: an env.sh that extends it ran under the checks' set -u.
env -u LD_LIBRARY_PATH "$source/bench/device_check.sh" --bundle "$bundle" --out "$work/device" --quick \
  >"$work/device.out" 2>&1
status=$?
[ $status -ne 0 ] || fail "device_check exited 0 with a training run that exited 3: $(cat "$work/device.out")"
grep -q "failed (exit 3" "$work/device/scale_check.md" ||
  fail "the table does not say the run failed: $(cat "$work/device/scale_check.md" "$work/device.out")"
grep -q -- "--data $bundle/data" "$work/train-args" ||
  fail "rdmaps-train was not given the bundle's data: $(cat "$work/train-args")"
grep -q '^| 1 M | sgd | 2 | 2 |' "$work/device/scale_check.md" ||
  fail "no ps_grid row from the bundle's rdmaps-perf: $(cat "$work/device/scale_check.md")"
files=$(cd "$work/device" && find . -type f | sort | tr '\n' ' ')
[ "$(cd "$work/device" && find . -mindepth 1 | wc -l)" -le 6 ] || fail "more than 6 entries come back: $files"
for f in machine.txt scale_check.md scale_check.log raw.tgz; do
  [ -f "$work/device/$f" ] || fail "no $f among: $files"
done
# Listed to a file first: grep -q quits at its match, and tar's SIGPIPE failed the pipeline (pipefail).
tar tzf "$work/device/raw.tgz" >"$work/raw.list" || fail "raw.tgz cannot be listed"
grep -q 'scale/train.jsonl' "$work/raw.list" || fail "raw.tgz lacks the training runs: $(cat "$work/raw.list")"
echo "ok: device_check runs from a bundle (its env.sh and data), counts a run that printed its summary and" \
  "exited 3 as failed (exit $status), and returns $files"

# On the machine lent for its GPU, a GPU check that saw none (exit 77: a
# driver too old, no device passed in) fails the call, said in machine.txt;
# --quick (here, in CI) takes it as no failure. Fake programs: only the GPU
# check's outcome is looked at.
nogpu=$work/nogpu-bundle
mkdir -p "$nogpu/bin" "$nogpu/data"
for p in rdmaps-train rdmaps-info gpu_tests; do printf '#!/bin/sh\nexit 1\n' >"$nogpu/bin/$p"; done
printf '#!/bin/sh\ncase "$1" in gpu) echo "no CUDA device" >&2; exit 77 ;; esac\nexit 1\n' >"$nogpu/bin/rdmaps-perf"
chmod +x "$nogpu/bin/"*
"$source/bench/device_check.sh" --bundle "$nogpu" --out "$work/nogpu" --budget 60 >"$work/nogpu.out" 2>&1 &&
  fail "device_check exited 0 where its GPU check saw no GPU: $(cat "$work/nogpu.out")"
grep -q "no CUDA device seen: this call's GPU figures are missing" "$work/nogpu/machine.txt" ||
  fail "device_check did not say its GPU check saw no GPU: $(cat "$work/nogpu/machine.txt")"
"$source/bench/device_check.sh" --bundle "$nogpu" --out "$work/nogpu-quick" --budget 60 --quick >/dev/null 2>&1
! grep -q "no CUDA device seen" "$work/nogpu-quick/machine.txt" ||
  fail "device_check --quick failed for want of a GPU: $(cat "$work/nogpu-quick/machine.txt")"
echo "ok: device_check fails where its GPU check saw no GPU, but under --quick"

# Stopped (the call's limit: TERM), device_check still returns the JSON its
# GPU check writes in its own TERM handler: it was packed and collected before
# the check had written it.
# TERM once the GPU check runs its tests, as the call's limit sends it: to the whole group (timeout's).
timeout -s TERM 100 "$source/bench/device_check.sh" --bundle "$slow" --out "$work/stopped" --budget 200 \
  >"$work/stopped.out" 2>&1 &
stopped=$!
for _ in $(seq 300); do [ -e "$work/gpu_tests.started" ] && break; sleep 0.2; done
kill -TERM $stopped
wait $stopped
status=$?
[ $status -eq 124 ] || fail "device_check stopped by TERM exited $status: $(cat "$work/stopped.out")"
grep -q "gpu_tests (stopped by TERM" "$work/stopped/gpu_check.json" 2>/dev/null ||
  fail "device_check stopped by TERM returned no gpu_check.json of the runs so far: $(ls "$work/stopped")"
[ -f "$work/stopped/raw.tgz" ] || fail "device_check stopped by TERM returned no raw.tgz: $(ls "$work/stopped")"
echo "ok: device_check stopped by TERM returns the JSON its GPU check wrote as it stopped"

# bench/bundle_check.sh readies a bundle before the call: it keeps the four
# programs device_check runs, and refuses one without the dataset, without a
# library they need beyond the base system (the lent machine has no UCX), or
# without UCX's cma module.
ready=$work/ready
mkdir -p "$ready/bin" "$ready/data" "$ready/lib/ucx"
for tool in bench/rdmaps-perf src/rdmaps-train src/rdmaps-info tests/gpu_tests tests/ps_tests; do
  ln -s "$build/$tool" "$ready/bin/"
done
# A folder with a bin/ but no env.sh (~/.local, say) is no bundle: nothing in it is pruned.
if why=$("$source/bench/bundle_check.sh" "$ready" 2>&1); then fail "a folder without env.sh was a bundle: $why"; fi
[ -e "$ready/bin/ps_tests" ] || fail "bundle_check pruned a folder that is no bundle: $why"
cat >"$ready/env.sh" <<'SH'
b=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LD_LIBRARY_PATH=$b/lib UCX_MODULE_DIR=$b/lib/ucx
SH
if why=$("$source/bench/bundle_check.sh" "$ready" 2>&1); then fail "a bundle without UCX's libraries was ready: $why"; fi
# librdmaps (its build tree's, by $ORIGIN) or, where the tests' LD_LIBRARY_PATH finds it, UCX's.
grep -Eq "bin/rdmaps-perf needs, outside the bundle and the base system: .*lib(rdmaps|ucp)\.so" <<<"$why" ||
  fail "a library outside the bundle was not named: $why"
# Every library the programs resolve to here goes into lib/ (as the bundling tool copies them).
for tool in bench/rdmaps-perf src/rdmaps-train src/rdmaps-info tests/gpu_tests; do ldd "$build/$tool"; done |
  awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u | xargs -I{} ln -sf {} "$ready/lib/"
if why=$("$source/bench/bundle_check.sh" "$ready" 2>&1); then fail "a bundle without UCX's cma module was ready: $why"; fi
grep -q "no libuct_cma.so" <<<"$why" || fail "the missing cma module was not named: $why"
ln -s "$(dirname "$(readlink -f "$ready/lib/libucs.so.0")")/ucx/libuct_cma.so.0" "$ready/lib/ucx/libuct_cma.so"
if why=$("$source/bench/bundle_check.sh" "$ready" 2>&1); then fail "a bundle without the dataset was ready: $why"; fi
grep -q "data/ holds 0 of the 4 Fashion-MNIST files" <<<"$why" || fail "no data/ was not named: $why"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  : >"$ready/data/$f.gz"
done
"$source/bench/bundle_check.sh" "$ready" >"$work/ready.out" 2>&1 || fail "bundle_check refused: $(cat "$work/ready.out")"
[ "$(ls "$ready/bin" | tr '\n' ' ')" = "gpu_tests rdmaps-info rdmaps-perf rdmaps-train " ] ||
  fail "bundle_check kept: $(ls "$ready/bin")"
echo "ok: bundle_check keeps the four programs and refuses a bundle without the dataset, UCX's libraries or its cma module"

# A flag of a value given last is named (bash said "$2: unbound variable").
for call in "device_check.sh --out" "gpu_check.sh --bin" "scale_check.sh --budget"; do
  script=${call% *} flag=${call#* }
  said=$("$source/bench/$script" "$flag" 2>&1) && fail "$call ran"
  [ "$said" = "$script: $flag needs a value (see --help)" ] || fail "$call said: $said"
done
echo "ok: the check scripts name a flag given no value"

# A failed ps_grid cell is said and the rest of the grid still runs and is tabled.
cat >"$work/perf" <<'SH'
#!/bin/sh
case "$*" in *"--server-threads 2"*) echo "perf: boom" >&2; exit 1 ;; esac
echo '{"floats":1048576,"rule":"sgd","workers":1,"server_threads":1,"iter_p50_s":0.002,"bound_s":0.001,' \
  '"bound_wire_s":0.0005,"bound_memory_s":0.0004,"bound_copy_out_s":0.0001,"ratio":2.0,"intake_GBps":2.0,' \
  '"push_vs_transport":0.9,"pull_vs_transport":0.8}'
SH
chmod +x "$work/perf"
if grid=$(PERF="$work/perf" RULES=sgd FLOATS=1M WORKERS=1 THREADS="2 1" "$source/bench/ps_grid.sh" . "$work/grid.jsonl" 2>&1); then
  fail "ps_grid exited 0 with a failed cell: $grid"
fi
[[ $grid == *"| 1 M | sgd | 1 | 1 |"* && $grid == *"1 launch(es) failed"* ]] ||
  fail "ps_grid stopped at its failed cell instead of running and tabling the rest: $grid"
echo "ok: ps_grid runs the rest of its grid past a failed cell and says so"

# compare_hot_path's summary: each build's medians and the paired new/old ratios
# (the docs' "medians before -> after" were worked out by hand from its lines).
for which in old new; do
  p50=0.010; [ $which = new ] && p50=0.011
  cat >"$work/perf-$which" <<SH
#!/bin/sh
echo '{"iter_p50_s":$p50,"ratio":1.5}'
SH
  chmod +x "$work/perf-$which"
done
hot=$("$source/bench/compare_hot_path.sh" "$work/perf-old" "$work/perf-new" 3 2>&1) || fail "compare_hot_path: $hot"
[[ $hot == *"shm dc-asgd-a old: iteration p50 10.0 10.0 10.0 ms (median 10.0), ratio to bound 1.50 1.50 1.50 (median 1.50)"* &&
   $hot == *"tcp sgd: new/old per repeat 1.10 1.10 1.10, median 1.10"* ]] || fail "compare_hot_path's summary: $hot"
hot=$(CASES="shm 1000 sgd bf16" "$source/bench/compare_hot_path.sh" "$work/perf-old" "$work/perf-new" 1 2>&1) ||
  fail "compare_hot_path with CASES: $hot"
[[ $hot == *"shm sgd/bf16: new/old per repeat 1.10, median 1.10"* && $hot != *"tcp sgd"* ]] ||
  fail "compare_hot_path did not run the CASES given: $hot"
printf '#!/bin/sh\necho "perf: boom" >&2; exit 1\n' >"$work/perf-broken"
chmod +x "$work/perf-broken"
if hot=$("$source/bench/compare_hot_path.sh" "$work/perf-old" "$work/perf-broken" 1 2>&1); then
  fail "compare_hot_path exited 0 with a failing build: $hot"
fi
[[ $hot == *"perf: boom"* ]] || fail "compare_hot_path hid why a run failed: $hot"
echo "ok: compare_hot_path prints each build's medians and the paired ratios, and why a run failed"

# A grid its time limit stops (timeout's TERM) still tables the launches it
# finished: the whole table was lost with it, and a lent machine's part with it.
cat >"$work/slow-perf" <<SH
#!/bin/sh
[ -e "$work/slow-perf.once" ] && exec sleep 60
: >"$work/slow-perf.once"
exec "$work/perf" "\$@"
SH
chmod +x "$work/slow-perf"
grid=$(PERF="$work/slow-perf" RULES="sgd dc-asgd-a" FLOATS=1M WORKERS=1 THREADS=1 \
  timeout -k 10 3 "$source/bench/ps_grid.sh" . "$work/grid-cut.jsonl" 2>&1)
status=$?
[ $status -eq 124 ] && [[ $grid == *"| 1 M | sgd | 1 | 1 |"* && $grid == *"the table holds the launches so far"* ]] ||
  fail "a grid stopped by its time limit (exit $status) did not table what it finished: $grid"
echo "ok: ps_grid stopped by its time limit tables the launches it finished"

# device_check --skip-gpu --scale-parts, started above, ran meanwhile.
wait $rest
grep -q "gpu_check: not run (--skip-gpu)" "$work/rest/machine.txt" ||
  fail "device_check --skip-gpu: $(cat "$work/rest/machine.txt")"
grep -q "^## server threads" "$work/rest/scale_check.md" && ! grep -q "^## DC-ASGD-a" "$work/rest/scale_check.md" &&
  grep -q "failed: tcp, 1 worker (not run: --budget spent)" "$work/rest.out" ||
  fail "device_check --scale-parts 1,3 did not run part 1 and try part 3 only: $(cat "$work/rest.out")"
grep -q -- "--skip-gpu --scale-parts 1,3 --budget SECONDS" "$work/rest.out" ||
  fail "device_check did not name the parts its time left unrun (1, stopped; 3, not run): $(cat "$work/rest.out")"
echo "ok: device_check's --skip-gpu and --scale-parts run the rest, and it names the rest as those flags"

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
