#!/usr/bin/env bash
# Virtual workers (rdmaps-train --virtual-workers N): many real clients in one
# process, stepping in a seeded schedule (which also plays stragglers and the
# SSP bound). The servers must measure exactly the staleness the schedule
# made, two runs must be identical bit for bit, DC-ASGD-a
# must not diverge at its defaults with 16 of them (the paper's formula does),
# and bad flags (and workers past the memory or open files this process may
# have) must be refused naming the flag.
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

# gnuplot needs no secret: the run's (here one given) stays out of its environment.
mkdir -p "$out/fake-bin"
printf '#!/bin/sh\nenv > "%s"\n' "$out/gnuplot.env" >"$out/fake-bin/gnuplot"
chmod +x "$out/fake-bin/gnuplot"
PATH="$out/fake-bin:$PATH" RDMAPS_SECRET=0123456789abcdef0123456789abcdef \
  "$train" --virtual-workers 2 "${small[@]}" --out "$out/env" >/dev/null 2>&1 || fail "the run for the fake gnuplot failed"
[ -s "$out/gnuplot.env" ] || fail "the fake gnuplot did not run"
if grep -q '^RDMAPS_SECRET=' "$out/gnuplot.env"; then fail "gnuplot was given RDMAPS_SECRET"; fi

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

# 4. The schedule plays stragglers and the SSP bound on its own clock: the
#    servers (fully asynchronous) measure exactly the staleness it made; BSP
#    makes each round's pushes 0..3 stale; a 4x straggler makes the job last
#    its 50 steps of 4 step times whatever the bound, and SSP(1) keeps its
#    pushes 6 stale at most where async lets them reach 12.
for mode in "--sync" "--staleness 1" "--async"; do
  # shellcheck disable=SC2086  # the mode is two words or one
  r=$("$train" --virtual-workers 4 $mode --straggler 1:4 --transport tcp "${small[@]}" --out "$out/ssp" 2>"$out/ssp.err") \
    || fail "virtual workers with $mode and a straggler: $(cat "$out/ssp.err")"
  py 'import json,sys
r, mode = json.loads(sys.argv[1]), sys.argv[2]
h, s = r["staleness_histogram"], r["schedule_staleness_histogram"]
assert h == s, f"servers measured {h}, the schedule made {s}"
steps = 12800 // 4 // 64
assert r["virtual_time"] == (1 + 16 * steps - 4) / 4, r["virtual_time"]
assert r["straggled_steps"] == steps, r["straggled_steps"]
worst = max(int(t) for t in h)
if mode == "--sync":
    assert h == {str(t): steps for t in range(4)}, f"BSP: {h}"
elif mode == "--staleness 1":
    assert worst <= 6, f"SSP(1): pushes {worst} stale"
else:
    assert worst == 12, f"async with a 4x straggler: pushes at most {worst} stale, expected 12"
t85 = r["virtual_time_to_85"]
assert t85 is None or 0 < t85 <= r["virtual_time"], t85' "$r" "$mode" || fail "$mode with a straggler: $r"
done
# A random straggler and SSP(2) repeat bit for bit, evaluations dated on the schedule's clock.
for run in c d; do
  "$train" --virtual-workers 4 --staleness 2 --straggler random:4 "${small[@]}" --evals-per-epoch 4 --out "$out/$run" \
    >"$out/$run.json" 2>"$out/$run.err" || fail "SSP(2) with random stragglers: $(cat "$out/$run.err")"
done
cmp -s <(cut -d, -f1,3- "$out/c/metrics.csv") <(cut -d, -f1,3- "$out/d/metrics.csv") || fail "SSP(2) with random stragglers did not repeat"
py 'import json,sys
r = json.load(open(sys.argv[1]))
assert r["staleness_histogram"] == r["schedule_staleness_histogram"], r
assert r["straggled_steps"] > 0 and r["virtual_time"] > 12800 // 4 // 64, r' "$out/c.json" || fail "SSP(2) random: $(cat "$out/c.json")"

# --compare with virtual workers runs all six modes on the schedule, BSP and SSP included.
cmp_json=$("$train" --virtual-workers 4 --compare --epochs 1 --train-limit 6400 --test-limit 500 --json --out "$out/cmp" 2>"$out/cmp.err") \
  || fail "--compare with virtual workers: $(cat "$out/cmp.err")"
py 'import json,sys
runs = json.loads(sys.argv[1])
assert [r["run"] for r in runs] == ["sequential SGD", "BSP", "SSP s=3", "ASGD", "DC-ASGD-c", "DC-ASGD-a"], runs
assert [r["virtual_workers"] for r in runs] == [1, 4, 4, 4, 4, 4], runs
for r in runs:
    assert r["staleness_histogram"] == r["schedule_staleness_histogram"], r
assert runs[1]["staleness_histogram"] == {str(t): 25 for t in range(4)}, runs[1]
# The pulls by which the schedule waits for a held worker are not training: BSP pulled 1.74x what ASGD did.
pulled = {(r["pulls"], r["bytes_pulled"]) for r in runs[1:]}
assert len(pulled) == 1, [(r["run"], r["pulls"], r["bytes_pulled"]) for r in runs]' "$cmp_json" || fail "--compare: $cmp_json"
# Sequential SGD, the reference, has no straggler: with 0:4 its one worker was
# slowed (every step 4 times the ticks), with 1:4 not.
cmp_json=$("$train" --virtual-workers 2 --compare --straggler 0:4 --epochs 1 --train-limit 1280 --test-limit 100 --json \
  --out "$out/cmp-straggler" 2>"$out/cmp-straggler.err") || fail "--compare --straggler 0:4: $(cat "$out/cmp-straggler.err")"
py 'import json,sys
runs = json.loads(sys.argv[1])
assert runs[0]["straggled_steps"] == 0 and runs[1]["straggled_steps"] > 0, [(r["run"], r["straggled_steps"]) for r in runs]' \
  "$cmp_json" || fail "--compare --straggler 0:4: $cmp_json"

# 5. Bad flags are refused, naming the flag.
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
refused "--workers: 3 differs from --virtual-workers 2" --virtual-workers 2 --workers 3
refused "--straggler: worker 4 does not exist" --virtual-workers 4 --straggler 4:2
refused "--skip-pulls: is not played by the --virtual-workers schedule" --virtual-workers 4 --staleness 2 --skip-pulls
# Accepted and doing nothing: no bound to skip by; -1, the value that stands for off.
refused "--skip-pulls: skips pulls while a copy is within the staleness bound" --workers 2 --skip-pulls
refused "--expect-accuracy: '-1' is not a fraction from 0 to 1" --virtual-workers 4 --expect-accuracy -1
# One worker would get less than a batch: --batch is named, not --workers (never given).
refused "--batch: 4 workers of 1024 training examples" --batch 4096 --train-limit 1024
# Refused before any run: --compare's sequential run (40 steps an epoch) trained, then its BSP run (10) was refused.
refused "--evals-per-epoch: 20: with 4 workers each takes 10 steps an epoch" --compare --virtual-workers 4 \
  --train-limit 2560 --test-limit 100 --epochs 1 --evals-per-epoch 20
# Accepted and then ignored: one worker of a 2-worker job, without its schedule; an accuracy never checked.
refused "--virtual-workers: --role worker runs one worker" --role worker --worker 0 --servers-list 127.0.0.1:1 \
  --virtual-workers 2
refused "--expect-accuracy: worker 1 evaluates nothing" --role worker --worker 1 --workers 2 \
  --servers-list 127.0.0.1:1 --expect-accuracy 0.5
# Under a launcher the launch's workers decide, not --workers' default of 4:
# worker 3 of a world of 3 (one server, two workers) was taken and never
# straggled, and worker 5 of a world of 10 was refused.
launched() { env RDMAPS_SECRET=0123456789abcdef0123 MASTER_ADDR=127.0.0.1 MASTER_PORT=9 RDMAPS_RANK=1 RDMAPS_WORLD_SIZE="$1" "$train" "${@:2}" 2>&1; }
err=$(launched 3 --straggler 3:2 --launch-timeout 1) && fail "a launched --straggler 3:2 of 2 workers was accepted"
grep -q -- "--straggler: worker 3 does not exist (the job has 2 workers)" <<<"$err" || fail "launched --straggler 3:2: $err"
# Past the flag checks, it fails where it should: at the rendezvous no rank 0 hosts.
err=$(launched 10 --straggler 5:2 --launch-timeout 1) && fail "a launch with no rendezvous ran: $err"
if grep -q -- "--straggler" <<<"$err"; then fail "launched --straggler 5:2 of 9 workers refused: $err"; fi
grep -q "could not reach the rendezvous at 127.0.0.1:9" <<<"$err" || fail "launched --straggler 5:2: $err"
refused "unknown flag --no-such-flag" --no-such-flag 3
# 6. Workers that cannot all fit are refused after the first few, naming the
#    limit that binds: here a 600 MB memory cgroup (the dataset takes 220 MB,
#    each worker about 7), as Slurm's ConstrainRAMSpace or a container sets.
cgroup=/sys/fs/cgroup/memory/rdmaps-check-virtual-$$
# N virtual workers in a 600 MB cgroup must be refused, saying each WANT.
refused_in_600mb() {
  local n=$1 err
  shift
  mkdir "$cgroup" && echo $((600 << 20)) >"$cgroup/memory.limit_in_bytes"
  if err=$(sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cgroup" \
    "$train" --virtual-workers "$n" --epochs 1 --train-limit 51200 --test-limit 500 --out "$out/big$n" 2>&1); then
    rmdir "$cgroup"; fail "$n virtual workers in 600 MB were not refused"; return
  fi
  rmdir "$cgroup" 2>/dev/null || true
  for want in "--virtual-workers $n: each worker takes about" "$@"; do
    grep -qF -- "$want" <<<"$err" || fail "$n virtual workers in 600 MB: no '$want' in: $err"
  done
}
if mkdir "$cgroup" 2>/dev/null && echo $((600 << 20)) >"$cgroup/memory.limit_in_bytes" 2>/dev/null; then
  rmdir "$cgroup"
  refused_in_600mb 400 "the other 391 need about" "(the limit of memory cgroup /rdmaps-check-virtual-$$)"
  # 32 need about 720 MB with their server: measured by this process's size
  # alone (6.9 MB a worker, not 14.3) they were let through and killed.
  refused_in_600mb 32 "the other 23 need about" "what servers on this machine keep for it"
else
  rmdir "$cgroup" 2>/dev/null || true
  echo "skipped: cannot make a cgroup v1 memory limit here (needs root), so the memory refusal is not checked"
fi
# ... and so are workers past the open files this process may have: UCX
# aborts the process when an endpoint finds none left.
if err=$(ulimit -n 256 && "$train" --virtual-workers 64 --servers 2 --server-threads 2 --transport tcp \
  --epochs 1 --train-limit 6400 --test-limit 500 --out "$out/fds" 2>&1); then
  fail "64 virtual workers on 2 servers of 2 lanes each were not refused with 256 open files"
fi
for want in "--virtual-workers 64: each worker holds about" "but this process may open 256 (ulimit -n"; do
  grep -qF -- "$want" <<<"$err" || fail "64 virtual workers with 256 open files: no '$want' in: $err"
done

# --evals-per-epoch N: N evaluations an epoch, the last at its end (every
# 10 / 4 = 2 steps made five, at steps 2, 4, 6, 8, 10).
"$train" --virtual-workers 1 --train-limit 640 --test-limit 100 --epochs 2 --evals-per-epoch 4 --out "$out/evals" \
  >/dev/null 2>&1 || fail "--evals-per-epoch 4 run failed"
steps=$(cut -d, -f6 "$out/evals/metrics.csv" | tail -n +2 | tr '\n' ' ')
[ "$steps" = "0 3 5 8 10 13 15 18 20 " ] || fail "--evals-per-epoch 4 at 10 steps an epoch evaluated after steps: $steps"
# More than the steps of an epoch, asked for: refused (it tested after each step, 10 where 20 were asked;
# the default, 2, stays capped: 64 workers above take a step an epoch each).
if "$train" --virtual-workers 1 --train-limit 640 --test-limit 100 --epochs 1 --evals-per-epoch 20 \
  --out "$out/evals20" >"$out/evals20.log" 2>&1; then
  fail "--evals-per-epoch 20 at 10 steps an epoch was taken"
fi
grep -q -- "--evals-per-epoch: 20: the worker takes 10 steps an epoch (640 training examples in batches of 64)" \
  "$out/evals20.log" || fail "--evals-per-epoch 20 at 10 steps an epoch: $(tail -3 "$out/evals20.log")"

# --role virtual (virtual workers against servers of their own) checks
# --expect-accuracy as --role worker does: it exited 0 whatever it reached.
port=$("$(dirname "$0")/../common/free_ports.py")
small=(--workers 2 --epochs 1 --train-limit 640 --test-limit 100 --transport tcp)
# Bounded: a server whose workers never come would wait for them for good.
timeout 120 "$train" --role server --listen "127.0.0.1:$port" "${small[@]}" 2>"$out/expect-server.log" &
spid=$!
trap 'kill "$spid" 2>/dev/null || true' EXIT
status=0
timeout 120 "$train" --role virtual --virtual-workers 2 --servers-list "127.0.0.1:$port" "${small[@]}" \
  --expect-accuracy 0.99 >"$out/expect.out" 2>"$out/expect.err" || status=$?
[ "$status" = 3 ] || kill "$spid" 2>/dev/null || true
wait "$spid" || fail "the server of --role virtual failed: $(cat "$out/expect-server.log")"
trap - EXIT
[ "$status" = 3 ] || fail "--role virtual --expect-accuracy 0.99 exited $status, not 3: $(tail -3 "$out/expect.err")"
grep -q "is below --expect-accuracy 0.99" "$out/expect.err" || fail "--role virtual: no accuracy line: $(cat "$out/expect.err")"
# The same flags on both sides, --sync included: the server started by hand
# kept its bound 0 and refused each virtual worker, whose clients run without one.
port=$("$(dirname "$0")/../common/free_ports.py")
timeout 120 "$train" --role server --listen "127.0.0.1:$port" --virtual-workers 2 --sync "${small[@]:2}" \
  2>"$out/sync-server.log" &
spid=$!
trap 'kill "$spid" 2>/dev/null || true' EXIT
timeout 120 "$train" --role virtual --virtual-workers 2 --sync --servers-list "127.0.0.1:$port" "${small[@]:2}" \
  >"$out/sync.out" 2>"$out/sync.err" || { kill "$spid" 2>/dev/null; fail "--sync virtual workers against a server given --sync: $(tail -3 "$out/sync.err")"; }
wait "$spid" || fail "the --sync server of --role virtual failed: $(cat "$out/sync-server.log")"
trap - EXIT

echo "virtual workers: staleness exactly as scheduled (round-robin, geometric, BSP, SSP, stragglers; shm and tcp), runs repeat bit for bit, DC-ASGD-a holds at its defaults where the paper's formula diverges, bad flags refused, workers that do not fit in memory or open files refused"
