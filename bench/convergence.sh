#!/usr/bin/env bash
# Convergence at scale: final test accuracy of ASGD, DC-ASGD-c and DC-ASGD-a
# against sequential SGD, with N virtual workers (one process, a seeded
# schedule: the staleness of N workers in parallel, on any number of cores;
# docs/architecture.md "Virtual workers"). Each run is deterministic, so the
# table depends on the build and the flags only, not on the machine's load.
# A benchmark, not a test: it takes about 30 minutes on 2 cores with JOBS=2.
#
#   bench/convergence.sh [BUILD_DIR] [extra rdmaps-train flags...]
#
# Environment (defaults in brackets):
#   SEEDS ["1 2 3"]   NS ["4 8 16 32"] (round-robin: every push N-1 stale)
#   EXTRA_CELLS ["16:geometric:8"] (N:delay cells beside the round-robin ones)
#   MINIBATCH [""] (N:LR cells: N workers' synchronous minibatch SGD without
#     staleness, one worker with N times the batch at learning rate LR, the
#     reference of what N workers reach without asynchrony)
#   RULES ["off constant adaptive"] (--dc)   EPOCHS [15]   JOBS [2]
#   OUT [convergence-out]: one JSON line per run in OUT/results.jsonl (in plan
#   order; OUT/runs/*/result.json as each run ends), from
#   which bench/convergence_table.py prints the table (run it alone to reprint);
#   bench/convergence_by_epoch.py OUT prints the gap at every epoch from the
#   runs' metrics.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
extra=("$@")
train="$build/src/rdmaps-train"
[ -x "$train" ] || { echo "convergence.sh: $train not built (scripts/build.sh $build)" >&2; exit 1; }
seeds=${SEEDS:-"1 2 3"}
ns=${NS:-"4 8 16 32"}
cells=${EXTRA_CELLS:-"16:geometric:8"}
rules=${RULES:-"off constant adaptive"}
epochs=${EPOCHS:-15}
minibatch=${MINIBATCH:-}
jobs=${JOBS:-2}
out=${OUT:-convergence-out}
batch=64  # rdmaps-train's --batch, unless the extra flags name it
# What the plan sets per run is not an extra flag: rdmaps-train takes the last
# of a repeated flag, so an extra --seed ran every "seed" as that one (a
# spread of 0 across seeds), an --out put every run in one folder.
per_run() {
  case $1 in
    --seed | --epochs) echo "SEEDS and EPOCHS" ;;
    --out | --json) echo "OUT" ;;
    --virtual-workers | --delay | --dc) echo "NS, EXTRA_CELLS, MINIBATCH and RULES" ;;
    *) return 1 ;;
  esac
}
for ((i = 0; i < ${#extra[@]}; i++)); do
  case ${extra[i]} in
    --batch) batch=${extra[i + 1]:-} ;;
    --batch=*) batch=${extra[i]#--batch=} ;;
  esac
  if by=$(per_run "${extra[i]%%=*}"); then
    echo "convergence.sh: ${extra[i]%%=*} is set for each run by the plan ($by), not as an extra flag" >&2
    exit 1
  fi
done
[[ $batch =~ ^[1-9][0-9]*$ ]] || { echo "convergence.sh: --batch '$batch' is not a positive number" >&2; exit 1; }
for cell in $minibatch; do
  [[ $cell =~ ^[1-9][0-9]*:[0-9.]+$ ]] || { echo "convergence.sh: MINIBATCH cell '$cell' is not N:LR (e.g. 8:0.2)" >&2; exit 1; }
done
mkdir -p "$out"
rm -f "$out/results.jsonl"

# One line per run: N DELAY RULE SEED (N 1 with rule "off": sequential SGD;
# DELAY minibatch:LR: N workers' synchronous minibatch SGD, see MINIBATCH).
plan="$out/plan.txt"
: >"$plan"
for seed in $seeds; do
  echo "1 round-robin off $seed" >>"$plan"
  for n in $ns; do
    for rule in $rules; do echo "$n round-robin $rule $seed" >>"$plan"; done
  done
  for cell in $cells; do
    n=${cell%%:*}
    for rule in $rules; do echo "$n ${cell#*:} $rule $seed" >>"$plan"; done
  done
  for cell in $minibatch; do echo "${cell%%:*} minibatch:${cell#*:} off $seed" >>"$plan"; done
done

run_dir() { echo "$out/runs/n$1-${2//:/_}-$3-s$4"; }  # N DELAY RULE SEED
run_one() {  # N DELAY RULE SEED: the run's one JSON line into its own result.json
  set -o pipefail
  local n=$1 delay=$2 rule=$3 seed=$4 dir log
  dir=$(run_dir "$@")
  mkdir -p "$dir"
  log="$dir/stderr.txt"
  local json mode
  if [[ $delay == minibatch:* ]]; then  # the mean of N batches, applied at once: N workers in lockstep
    mode=(--virtual-workers 1 --batch $((n * batch)) --lr "${delay#minibatch:}" --dc off)
  else
    mode=(--virtual-workers "$n" --delay "$delay" --dc "$rule")
  fi
  # The mode's flags last: rdmaps-train takes the last of a repeated flag, and
  # a minibatch cell's --batch is N times the one the extra flags name.
  if json=$("$train" --seed "$seed" --epochs "$epochs" --json --out "$dir" "${extra[@]}" "${mode[@]}" \
      2>"$log" | tail -1); then
    :
  elif grep -q 'training diverged' "$log"; then  # a step's loss, or the final model's
    # A diverged run stops with the reason (the loss turned NaN); record it as such.
    json="{\"diverged\":true,\"why\":$(grep -m1 -o 'the [^:]*loss is.*' "$log" | /usr/bin/python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')}"
  else  # a bad flag, missing data, a kill: not a data point, and the table must not call it divergence
    echo "convergence.sh: run n=$n delay=$delay rule=$rule seed=$seed failed (see $log):" >&2
    tail -n 3 "$log" >&2
    return 1
  fi
  /usr/bin/python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(n=int(sys.argv[2]), delay=sys.argv[3], rule=sys.argv[4], seed=int(sys.argv[5])); print(json.dumps(r))' \
    "$json" "$n" "$delay" "$rule" "$seed" >"$dir/result.json"
}
export -f run_dir run_one
export out epochs train batch
# The extra flags as they were given (a path with a space is one word), for the runs xargs starts.
: >"$out/extra_flags"
[ ${#extra[@]} -eq 0 ] || printf '%s\0' "${extra[@]}" >"$out/extra_flags"

echo "convergence.sh: $(wc -l <"$plan") runs of $epochs epochs, $jobs at a time, extra flags: ${extra[*]:-none}" >&2
start=$(date +%s)
# xargs runs JOBS at a time, each into its own result.json: concurrent appends
# to one file interleave where Python writes a line in two (PYTHONUNBUFFERED).
# shellcheck disable=SC2016  # the bash that xargs starts expands them
while read -r n delay rule seed; do echo "$n $delay $rule $seed"; done <"$plan" |
  xargs -P "$jobs" -L 1 bash -c 'mapfile -d "" -t extra <"$out/extra_flags"; run_one "$@"' _
while read -r n delay rule seed; do cat "$(run_dir "$n" "$delay" "$rule" "$seed")/result.json"; done <"$plan" \
  >"$out/results.jsonl"
echo "convergence.sh: done in $(( $(date +%s) - start )) s" >&2

/usr/bin/python3 bench/convergence_table.py "$out/results.jsonl"
