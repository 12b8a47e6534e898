#!/usr/bin/env bash
# The figures that need a machine with more cores than this project's 2-core
# CI box, in one command (docs/benchmarks.md says which issue waits on each),
# most wanted first, each part capped (seconds) so that one that hangs leaves
# the rest of the budget to the next, and a part its cap or the budget stops
# still reports the runs it finished (its table of them):
#  - the server on the whole machine: bench/ps_grid.sh with 8 workers and
#    T = 1, 2, 4, 8 server threads, sgd and dc-asgd-a at 16 M floats, each
#    cell against its same-run T-thread bound (100);
#  - DC-ASGD-a at its defaults with 8 worker processes truly in parallel
#    (seed 1; once more with the model in 4 shards, so 4 server lanes; ASGD
#    once for the time it takes; seed 2) (120; a run its cap leaves no time
#    for is reported as not run);
#  - tcp (active messages), 1 worker, sgd, 4 M and 16 M floats, T = 1 and 2,
#    2 launches: push and pull against the same-run probe (on 2 cores the
#    loopback's copies take both cores; here they have cores to spare) (70);
#  - stragglers: bench/straggler.sh random:4 (BSP, SSP(3)+DC-ASGD-a, async),
#    5 epochs (85 % is crossed in epoch 2 or 3), 2 reps (90);
#  - dc-asgd-a at 64 M floats, T = 1, 2, 4, 8 (100).
# Writes OUT/scale_check.md (the tables) and OUT/scale_check.log; each part's
# raw JSON lines stay under OUT.
#
#   bench/scale_check.sh [--bin DIR] [--data DIR] [--out DIR] [--budget S] [--quick] [--parts LIST]
#
# --bin: where rdmaps-perf and rdmaps-train are (a build tree, one folder, or
#   a bundle with bin/ and env.sh); default: the build/ next to this script,
#   else PATH.
# --data: Fashion-MNIST for rdmaps-train (default: a bundle's data/, else
#   rdmaps-train's own default).
# --quick: a small model, 2 workers, T = 1 and 2, 1 epoch on a data subset
#   (the CI check of this script).
# --budget: seconds for everything (default 480); a part still running when
#   it is spent is stopped and reported.
# --parts: only these parts, by number in the order above (e.g. 4,5). The
#   last line names the parts that the time left unrun or unfinished, as the
#   --parts that runs them (a second call on the lent machine).
# About 5 minutes on a 16-core machine (estimated from the issues' timings:
# it has not run on one yet). Exits non-zero if a run failed.
set -uo pipefail
out="scale-check-out" budget=480
source "$(dirname "$0")/check_args.sh"
[[ -z $parts || $parts =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] ||
  { echo "scale_check.sh: --parts '$parts' is not a list of part numbers such as 4,5 (see --help)" >&2; exit 2; }
perf=$(find_tool rdmaps-perf) train=$(find_tool rdmaps-train)
for t in perf train; do
  [ -n "${!t}" ] || { echo "scale_check.sh: cannot find the $t program under '${bin:-PATH}' (--bin DIR)" >&2; exit 2; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
log=$out/scale_check.log md=$out/scale_check.md
: >"$log"
: >"$md"
data_flag=()
[ -n "$data" ] && data_flag=(--data "$data")
failed=()

# part NAME CAP COMMAND...: its stdout (a markdown table) to the report, the
# rest to the log; at most CAP seconds, so that one part that hangs leaves
# the budget to the next.
part_no=0 unfinished=()
part() {
  local name=$1 start=$SECONDS limit
  part_no=$((part_no + 1))
  if [ -n "$parts" ] && [[ ,$parts, != *,$part_no,* ]]; then
    echo "== $part_no $name: skipped (--parts $parts)" >>"$log"
    return
  fi
  part_deadline=$((SECONDS + $2))
  shift 2
  limit=$(time_left "$budget")
  spent "$name" "$limit" && { part_deadline="" unfinished+=("$part_no"); return; }
  echo "== $name: $*" | tee -a "$log"
  { echo "## $name"; echo; } >>"$md"
  if declare -F "$1" >/dev/null; then
    "$@" >>"$md" 2>>"$log"  # a function of this script: its runs are cut to the budget themselves
  else
    timeout -k 10 "$limit" "$@" >>"$md" 2>>"$log"
  fi
  local status=$?
  # Ran to its cap or the budget: a run of it may have been stopped or not run.
  [ "$(time_left 1)" -gt 0 ] || unfinished+=("$part_no")
  part_deadline=""
  echo >>"$md"
  echo "== $name: exit $status after $((SECONDS - start)) s" | tee -a "$log"
  [ $status -eq 0 ] || failed+=("$name (exit $status)")
}

# train_runs LABEL FLAGS...: one JSON line per seed in $out/train.jsonl.
train_runs() {
  local label=$1
  shift
  for seed in "${seeds[@]}"; do
    local json limit err=$out/train-$label-$seed.err status
    limit=$(time_left 600)
    # Under 30 s left no 8-worker run ends: killed, it read as a failed run.
    if [ "$limit" -lt 30 ]; then  # the part's cap or the budget is spent: said as not run, not as a failure of the run
      echo "== train $label seed $seed: not run: its part's time is spent" >>"$log"
      json='{"not_run":true}'
    else
      json=$(timeout -k 10 "$limit" "$train" --json --seed "$seed" --out "$out/train-$label-$seed" \
        "${data_flag[@]}" "$@" 2>"$err" | tail -1)
      status=$?
      cat "$err" >>"$log"
      # Its summary comes before its outputs are written and before
      # --expect-accuracy's exit 3: a run that printed one may still have failed.
      # Only a run the loss stopped diverged (convergence.sh's rule).
      if [ $status -ne 0 ]; then
        # timeout's 124 (137 after its -k): the part's cap or the budget ended it, not the run itself.
        if grep -q 'training diverged' "$err"; then
          json='{"diverged":true}'
        elif [ $status -eq 124 ] || [ $status -eq 137 ]; then
          json="{\"stopped\":true,\"exit\":$status}"
        else
          json="{\"failed\":true,\"exit\":$status}"
        fi
      fi
    fi
    /usr/bin/env python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(run=sys.argv[2], seed=int(sys.argv[3])); print(json.dumps(r))' \
      "$json" "$label" "$seed" >>"$out/train.jsonl" || return 1
  done
}
train_table() {
  /usr/bin/env python3 - "$out/train.jsonl" <<'PY'
import json, sys
print("| run | seed | final accuracy % | seconds | diverged |")
print("|---|---:|---:|---:|---|")
failed = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    failed += bool(r.get("failed") or r.get("not_run") or r.get("stopped"))
    acc = r.get("final_test_accuracy")
    verdict = (f"failed (exit {r.get('exit')}, see the log)" if r.get("failed") else
               f"stopped at its part's time (exit {r.get('exit')}): unfinished, not failed" if r.get("stopped") else
               "not run (its part's time was spent)" if r.get("not_run") else str(bool(r.get("diverged"))))
    print(f"| {r['run']} | {r['seed']} | {'—' if acc is None else f'{100 * acc:.2f}'} | "
          f"{r.get('seconds', float('nan')):.1f} | {verdict} |")
sys.exit(1 if failed else 0)  # a run that failed other than by diverging (see the log)
PY
}
: >"$out/train.jsonl"

dc_quick() {
  seeds=(1)
  train_runs dc-a-w2 --workers 2 --async --dc adaptive --epochs 1 --train-limit 2000 --test-limit 500 && train_table
}
dc_at_scale() {  # most wanted first: the part's cap may stop the rest
  seeds=(1)
  train_runs dc-a-w8 --workers 8 --async --dc adaptive || return 1
  # The MLP is one 1 MiB shard, so one server lane applies all eight workers'
  # pushes; in four shards, four lanes share them: is the one lane the 72 s?
  train_runs dc-a-w8-4-lanes --workers 8 --async --dc adaptive --shard-floats 65536 || return 1
  train_runs asgd-w8 --workers 8 --async --dc off || return 1
  seeds=(2)
  train_runs dc-a-w8 --workers 8 --async --dc adaptive
  train_table
}
if [ $quick = 1 ]; then
  part "server threads" 120 env PERF="$perf" RULES=sgd FLOATS=1M WORKERS=2 THREADS="1 2" EXTRA="--iters 3" \
    "$here/ps_grid.sh" . "$out/ps_grid.jsonl"
  part "DC-ASGD-a, 2 workers, 1 epoch of a subset" 120 dc_quick
  part "tcp, 1 worker" 120 env PERF="$perf" TRANSPORT=tcp RULES=sgd FLOATS=1M WORKERS=1 THREADS=1 EXTRA="--iters 3" \
    "$here/ps_grid.sh" . "$out/ps_grid_tcp.jsonl"
else
  # Most wanted first, each capped: on a lent machine the budget may end before the last.
  part "server threads, 16 M floats" 100 env PERF="$perf" RULES="sgd dc-asgd-a" FLOATS=16M WORKERS=8 \
    THREADS="1 2 4 8" EXTRA="--iters 10" "$here/ps_grid.sh" . "$out/ps_grid_16M.jsonl"
  part "DC-ASGD-a at its defaults, 8 workers" 120 dc_at_scale
  part "tcp, 1 worker, sgd" 70 env PERF="$perf" TRANSPORT=tcp RULES=sgd FLOATS="4M 16M" WORKERS=1 THREADS="1 2" \
    REPEATS=2 "$here/ps_grid.sh" . "$out/ps_grid_tcp.jsonl"
  part "stragglers (random:4)" 90 env TRAIN="$train" OUT="$out/straggler" "$here/straggler.sh" . random:4 2 \
    --epochs 5 "${data_flag[@]}"
  part "server threads, 64 M floats" 100 env PERF="$perf" RULES=dc-asgd-a FLOATS=64M WORKERS=8 THREADS="1 2 4 8" \
    EXTRA="--iters 5" "$here/ps_grid.sh" . "$out/ps_grid_64M.jsonl"
fi
for n in ${parts//,/ }; do
  [ "$n" -le $part_no ] || failed+=("--parts $parts: there is no part $n (1 to $part_no)")
done
echo "scale_check: $((${#failed[@]})) part(s) failed -> $md, $log"
if [ ${#unfinished[@]} -gt 0 ]; then
  list=$(IFS=,; echo "${unfinished[*]}")
  echo "scale_check: the time left parts unrun or unfinished: --parts $list runs them"
fi
[ ${#failed[@]} -eq 0 ] || { printf 'scale_check: failed: %s\n' "${failed[@]}"; exit 1; }
