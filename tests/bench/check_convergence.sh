#!/usr/bin/env bash
# bench/convergence.sh end to end, small (2 seeds, 2 virtual workers, every rule,
# a minibatch cell, 1 epoch of 2560 examples, 2 at a time): every planned run lands in
# results.jsonl, in plan order, from its own result.json, and the
# table's gap to sequential SGD is the mean ± standard error of the per-seed
# differences in it, as is convergence_by_epoch.py's final row (from each
# run's metrics.csv); the minibatch cell takes twice the batch (half the
# updates) and its row pairs it by seed. All three refuse bad input.
#   tests/bench/check_convergence.sh BUILD_DIR OUT_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
fail() { echo "FAILED: $*"; exit 1; }

SEEDS="1 2" NS="2" EXTRA_CELLS=" " EPOCHS=1 JOBS=2 MINIBATCH="2:0.2" PYTHONUNBUFFERED=1 OUT="$out" \
  "$root/bench/convergence.sh" "$build" --train-limit 2560 --test-limit 1000 >"$out/table.md" 2>"$out/convergence.err" \
  || fail "convergence.sh: $(tail -5 "$out/convergence.err")"
/usr/bin/python3 - "$out/results.jsonl" "$out/table.md" <<'PY' || fail "the table does not match the runs (above)"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
table = open(sys.argv[2]).read()
rr, mb = "round-robin", "minibatch:0.2"
plan = ({(1, rr, "off", s) for s in (1, 2)} | {(2, rr, r, s) for r in ("off", "constant", "adaptive") for s in (1, 2)}
        | {(2, mb, "off", s) for s in (1, 2)})
got = {(r["n"], r["delay"], r["rule"], r["seed"]) for r in runs}
assert got == plan and len(runs) == len(plan), f"runs {sorted(got)}, planned {sorted(plan)}"
# In plan order, each line its run's own result.json (no shared file written by concurrent runs).
out = sys.argv[1].rsplit("/", 1)[0]
for line, (n, delay, rule, seed) in zip(open(sys.argv[1]), (l.split() for l in open(out + "/plan.txt"))):
    run = json.loads(line)
    assert (run["n"], run["delay"], run["rule"], run["seed"]) == (int(n), delay, rule, int(seed)), f"{run} out of plan order"
    own = open(f"{out}/runs/n{n}-{delay.replace(':', '_')}-{rule}-s{seed}/result.json").read()
    assert own == line, f"results.jsonl has {line!r}, the run wrote {own!r}"
acc = {(r["n"], r["delay"], r["rule"], r["seed"]): 100 * r["final_test_accuracy"] for r in runs if not r.get("diverged")}
def gap(a, b):
    diffs = [acc[a + (s,)] - acc[b + (s,)] for s in (1, 2)]
    return f"{statistics.mean(diffs):+.2f} ± {statistics.stdev(diffs) / 2 ** 0.5:.2f}"
want = gap((2, rr, "adaptive"), (1, rr, "off"))
row = [l for l in table.splitlines() if l.startswith("| 2 | round-robin |")]
assert len(row) == 1, f"one row for N = 2 expected:\n{table}"
cells = [c.strip() for c in row[0].strip("|").split("|")]
assert cells[6] == want, f"DC-a − seq is {cells[6]!r}, the runs give {want!r}:\n{table}"
adaptive = [acc[(2, rr, "adaptive", s)] for s in (1, 2)]
assert cells[5].startswith(f"{statistics.mean(adaptive):.2f} ("), f"DC-ASGD-a cell {cells[5]!r}, runs {adaptive}"
assert cells[2] == "1 / 1", f"2 round-robin workers are 1 stale, the table says {cells[2]!r}"
# The minibatch cell: one worker with twice the batch, so half the updates, and its own row.
updates = {(r["n"], r["delay"], r["seed"]): r["updates"] for r in runs}
for s in (1, 2):
    assert 2 * updates[(2, mb, s)] == updates[(1, rr, s)], f"minibatch updates {updates}"
    assert acc[(2, mb, "off", s)] != acc[(1, rr, "off", s)], "the minibatch run is sequential SGD again"
row = [l for l in table.splitlines() if l.startswith("| 2 | 0.2 |")]
assert len(row) == 1, f"one minibatch row expected:\n{table}"
cells = [c.strip() for c in row[0].strip("|").split("|")]
minibatch = [acc[(2, mb, "off", s)] for s in (1, 2)]
assert cells[2].startswith(f"{statistics.mean(minibatch):.2f} ("), f"minibatch cell {cells[2]!r}, runs {minibatch}"
assert cells[3] == gap((2, mb, "off"), (1, rr, "off")), f"minibatch − seq {cells[3]!r}:\n{table}"
assert cells[4] == gap((2, rr, "adaptive"), (2, mb, "off")), f"DC-a − minibatch {cells[4]!r}:\n{table}"
PY

# Rules left out of a run (RULES=adaptive) are empty cells, not "diverged 0/0".
/usr/bin/python3 -c 'import json, sys
for line in open(sys.argv[1]):
    run = json.loads(line)
    if run["n"] == 1 or (run["rule"] == "adaptive" and run["delay"] == "round-robin"):
        print(line, end="")' "$out/results.jsonl" >"$out/adaptive.jsonl"
row=$(/usr/bin/python3 "$root/bench/convergence_table.py" "$out/adaptive.jsonl" | grep '^| 2 | round-robin |') \
  || fail "no N = 2 row from the DC-ASGD-a runs alone"
[[ $row == "| 2 | round-robin | 1 / 1 | — | — | "* ]] || fail "rules not run should be empty cells: $row"

# A MINIBATCH cell that is not N:LR, a --batch that is not a number, and a
# flag the plan sets per run (an extra --seed ran every seed as that one)
# are refused before any run.
for bad in "MINIBATCH=8" "MINIBATCH=8:fast" "FLAG=--batch=x" "FLAG=--seed" "FLAG=--epochs=3" "FLAG=--out"; do
  flags=(); env=()
  if [[ $bad == FLAG=* ]]; then flags=("${bad#FLAG=}" 9); env=(MINIBATCH=8:0.2); else env=("$bad"); fi
  if msg=$(env "${env[@]}" OUT="$out/refused" "$root/bench/convergence.sh" "$build" "${flags[@]}" 2>&1); then
    fail "convergence.sh accepted $bad"
  fi
  [[ $msg == *"is not N:LR"* || $msg == *"--batch 'x' is not a positive number"* ||
    $msg == *"${flags[0]%%=*} is set for each run by the plan"* ]] || fail "$bad: $msg"
  [ ! -e "$out/refused/plan.txt" ] || fail "$bad: planned runs before refusing"
done

# Extra flags reach each run as given: a data path with a space is one word
# (it was split in two, and every run "diverged").
ln -sfn /usr/share/datasets/fashion-mnist "$out/fashion mnist"
SEEDS=1 NS=2 RULES=off EXTRA_CELLS=" " EPOCHS=1 JOBS=2 OUT="$out/spaced" "$root/bench/convergence.sh" "$build" \
  --train-limit 1000 --test-limit 500 --data "$out/fashion mnist" >"$out/spaced.md" 2>"$out/spaced.err" \
  || fail "a data path with a space: $(tail -3 "$out/spaced.err")"
! grep -q diverged "$out/spaced/results.jsonl" || fail "a data path with a space: $(cat "$out/spaced/results.jsonl")"
# A run that fails for another reason than its loss is not "diverged": the benchmark stops naming it.
if msg=$(SEEDS=1 NS=2 RULES=off EXTRA_CELLS=" " EPOCHS=1 OUT="$out/bogus" "$root/bench/convergence.sh" "$build" \
  --bogus 2>&1); then
  fail "a run with a bad flag passed"
fi
[[ $msg == *"failed (see "*"--bogus"* ]] || fail "a bad flag: $msg"

# Bad input names the file and line.
printf '{"n": 1, "rule": "off"}\n' >"$out/bad.jsonl"
if msg=$(/usr/bin/python3 "$root/bench/convergence_table.py" "$out/bad.jsonl" 2>&1); then fail "accepted $out/bad.jsonl"; fi
[[ $msg == *"bad.jsonl:1: not a run of convergence.sh (no delay, seed)"* ]] || fail "bad input: $msg"
printf '{"n": 1, "delay": "round-robin", "rule": "off", "seed": 1, "final_test_accuracy": 0.8}\n[1]\n' >"$out/bad.jsonl"
if msg=$(/usr/bin/python3 "$root/bench/convergence_table.py" "$out/bad.jsonl" 2>&1); then fail "accepted a list"; fi
[[ $msg == *"bad.jsonl:2: not a run of convergence.sh (not an object)"* ]] || fail "a list: $msg"
if msg=$(/usr/bin/python3 "$root/bench/convergence_table.py" "$out/missing.jsonl" 2>&1); then fail "accepted a missing file"; fi
[[ $msg == *"cannot read $out/missing.jsonl"* ]] || fail "missing file: $msg"
# The gap by epoch ends, in its "final" row, with the table's gap: the same
# runs read from their metrics.csv instead of results.jsonl.
/usr/bin/python3 "$root/bench/convergence_by_epoch.py" "$out" >"$out/by_epoch.md" 2>&1 \
  || fail "convergence_by_epoch.py: $(cat "$out/by_epoch.md")"
table_gap=$(grep '^| 2 | round-robin |' "$out/table.md" | cut -d'|' -f8 | xargs)
final=$(grep '^| final |' "$out/by_epoch.md" | cut -d'|' -f3 | xargs)
[[ -n $table_gap && $final == "$table_gap" ]] || fail "by epoch, final gap '$final'; the table's '$table_gap'"
# A run folder an earlier invocation left in OUT (another seed) is not one of
# this table's runs: the final row still matches it (it was averaged in).
cp -r "$out/runs/n2-round-robin-adaptive-s1" "$out/runs/n2-round-robin-adaptive-s9"
cp -r "$out/runs/n1-round-robin-off-s1" "$out/runs/n1-round-robin-off-s9"
printf 'run,seconds,epoch,test_accuracy\nx,1,1.0,0.01\n' >"$out/runs/n2-round-robin-adaptive-s9/metrics.csv"
final=$(/usr/bin/python3 "$root/bench/convergence_by_epoch.py" "$out" 2>&1 | grep '^| final |' | cut -d'|' -f3 | xargs)
[[ $final == "$table_gap" ]] || fail "an earlier invocation's run was read: final gap '$final', the table's '$table_gap'"
rm -r "$out/runs/n2-round-robin-adaptive-s9" "$out/runs/n1-round-robin-off-s9"
cp "$out/runs/n2-round-robin-adaptive-s1/metrics.csv" "$out/metrics.saved"
printf 'run,seconds,epoch,test_accuracy\nx,1,0.5,high\n' >"$out/runs/n2-round-robin-adaptive-s1/metrics.csv"
if msg=$(/usr/bin/python3 "$root/bench/convergence_by_epoch.py" "$out" 2>&1); then fail "accepted a bad metrics.csv"; fi
[[ $msg == *"n2-round-robin-adaptive-s1/metrics.csv:2: no epoch and test_accuracy"* ]] || fail "bad metrics.csv: $msg"
mv "$out/metrics.saved" "$out/runs/n2-round-robin-adaptive-s1/metrics.csv"
if msg=$(/usr/bin/python3 "$root/bench/convergence_by_epoch.py" "$out/missing" 2>&1); then fail "accepted a missing folder"; fi
[[ $msg == *"cannot read $out/missing/results.jsonl"* ]] || fail "missing folder: $msg"
echo "convergence.sh: 10 runs, the table, its minibatch row and the gap by epoch match them; flags with spaces pass whole; a failed run is not a divergence; bad input refused"
