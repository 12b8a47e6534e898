#!/usr/bin/env bash
# Virtual workers (rdmaps-train --virtual-workers N): many real clients in one
# process, stepping in a seeded schedule. The servers must measure exactly the
# staleness the schedule made, two runs must be identical bit for bit, DC-ASGD-a
# must not diverge at its defaults with 16 of them (the paper's formula does),
# and bad flags must be refused naming the flag.
#   tests/train/check_virtual.sh RDMAPS_TRAIN OUT_DIR
set -euo pipefail
train=$1; out=$2
rm -rf "$out"  # a plot left by an earlier run must not pass for this one
mkdir -p "$out"
small=(--epochs 1 --train-limit 12800 --test-limit 1000 --json)
py() { /usr/bin/python3 -c "$@"; }
fail() { echo "FAILED: $*"; exit 1; }

# 1. Round-robin, 8 workers: every push after the first round is exactly 7
#    stale, the servers count what the schedule made, and a rerun repeats it.
for transport in shm tcp; do
  a=$("$train" --virtual-workers 8 --transport "$transport" "${small[@]}" --out "$out/a-$transport" 2>"$out/a.err") \
    || fail "8 virtual workers over $transport: $(cat "$out/a.err")"
  py 'import json,sys
r = json.loads(sys.argv[1])
h, s = r["staleness_histogram"], r["schedule_staleness_histogram"]
assert h == s, f"servers measured {h}, the schedule made {s}"
assert r["updates"] == 8 * (12800 // 8 // 64), r["updates"]
want = {str(t): 1 for t in range(7)}
want["7"] = r["updates"] - 7
assert h == want, f"round-robin with 8 workers should be 0..6 once each, then 7: {h}"
assert r["virtual_workers"] == 8 and r["delay"] == "round-robin", r' "$a" || fail "round-robin over $transport: $a"
done
"$train" --virtual-workers 8 --transport shm "${small[@]}" --out "$out/b-shm" >/dev/null 2>&1
cut -d, -f1,3- "$out/a-shm/metrics.csv" >"$out/a.curve"
cut -d, -f1,3- "$out/b-shm/metrics.csv" >"$out/b.curve"
cmp -s "$out/a.curve" "$out/b.curve" || fail "two runs with the same seed differ: $(diff "$out/a.curve" "$out/b.curve" | head -4)"
[ "$(wc -l <"$out/a.curve")" -ge 3 ] || fail "no loss curve to compare: $(cat "$out/a.curve")"
# Over tcp the pushes arrive by active message, not put: the same schedule trains the same model.
cut -d, -f1,3- "$out/a-tcp/metrics.csv" | cmp -s - "$out/a.curve" || fail "tcp and shm trained different models"

# 2. A geometric delay gives staleness a tail, still exactly as scheduled, and
#    a different seed a different schedule.
g1=$("$train" --virtual-workers 8 --delay geometric:4 --seed 1 "${small[@]}" --label "geo''s, \"4\" \\_x" --out "$out/g1" 2>/dev/null)
# A label with a comma, quotes (two in a row) and a backslash is one field of
# metrics.csv (RFC 4180 quoting) and a title of the plot (gnuplot's quoting).
py 'import csv,sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert rows and all(r["run"] == "geo\x27\x27s, \"4\" \\_x" for r in rows), rows[:2]
float(rows[-1]["test_accuracy"])' "$out/g1/metrics.csv" || fail "metrics.csv does not read back the label"
if command -v gnuplot >/dev/null; then
  if [ ! -s "$out/g1/accuracy.png" ] || [ -s "$out/g1/gnuplot.err" ]; then fail "no plot: $(cat "$out/g1/gnuplot.err")"; fi
fi

g2=$("$train" --virtual-workers 8 --delay geometric:4 --seed 2 "${small[@]}" --out "$out/g2" 2>/dev/null)
py 'import json,sys
a, b = (json.loads(x) for x in sys.argv[1:])
for r in a, b:
    assert r["staleness_histogram"] == r["schedule_staleness_histogram"], r
taus = [int(t) for t in a["staleness_histogram"]]
assert max(taus) > 7 and min(taus) < 7, f"geometric:4 with 8 workers should spread around 7: {taus}"
assert a["staleness_histogram"] != b["staleness_histogram"], "seeds 1 and 2 made the same schedule"' "$g1" "$g2" \
  || fail "geometric schedule: $g1 / $g2"

# 3. DC-ASGD-a at its defaults with 16 workers, every push 15 stale: no NaN
#    within 200 steps. The paper's exact formula diverges there, which is what
#    makes this check mean something.
"$train" --virtual-workers 16 "${small[@]}" --out "$out/dc16" >"$out/dc16.json" 2>"$out/dc16.err" \
  || fail "DC-ASGD-a at its defaults diverged with 16 virtual workers: $(cat "$out/dc16.err")"
if "$train" --virtual-workers 16 "${small[@]}" --ms-bias-correction off --dc-bound off --dc-tau0 off --out "$out/paper16" \
    >/dev/null 2>"$out/paper16.err"; then
  fail "the paper's DC-ASGD-a formula trained 16 virtual workers: the check above would not see a regression"
fi
grep -q "training diverged" "$out/paper16.err" || fail "paper formula failed otherwise: $(cat "$out/paper16.err")"

# 4. Bad flags are refused, naming the flag.
refused() {  # expected-text args...
  local want=$1; shift
  local err
  if err=$("$train" "$@" --out "$out/bad" 2>&1); then fail "accepted: $*"; fi
  grep -q -- "$want" <<<"$err" || fail "'$*' was refused without naming $want: $err"
}
refused "--virtual-workers: needs at least 1" --virtual-workers 0
refused "--virtual-workers" --virtual-workers -3
refused "more than the 4096 workers a server accepts" --virtual-workers 5000
refused "--delay: 'geometric:-1'" --virtual-workers 4 --delay geometric:-1
refused "--expect-accuracy: '88' is not a fraction from 0 to 1" --virtual-workers 4 --expect-accuracy 88
refused "--delay: 'uniform:0'" --virtual-workers 4 --delay uniform:0
refused "--delay: 'sometimes'" --virtual-workers 4 --delay sometimes
refused "--delay: sets the schedule of --virtual-workers" --delay round-robin
refused "--virtual-workers: the schedule sets the staleness" --virtual-workers 4 --sync
refused "--workers: 3 differs from --virtual-workers 2" --virtual-workers 2 --workers 3
refused "--straggler: virtual workers are delayed by --delay" --virtual-workers 2 --straggler 1:4
refused "unknown flag --no-such-flag" --no-such-flag 3
echo "virtual workers: staleness exactly as scheduled (round-robin, geometric; shm and tcp), runs repeat bit for bit, DC-ASGD-a holds at its defaults where the paper's formula diverges, bad flags refused"
