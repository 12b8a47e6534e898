#!/usr/bin/env bash
# The figures rdmaps-train reports must be true (docs/observability.md
# "rdmaps-train's figures"); one case a run, each a few seconds:
#   staleness-exact   pushes more than 255 stale: max and histogram as scheduled
#   dropped           --staleness-policy drop: updates are the applied steps, the dropped shown
#   csv-columns       metrics.csv's columns are the documented ones, worker0_steps what it says
#   progress-final    the progress line is redrawn with the final figures before its newline
#   worker-progress   a worker with fewer than 50 steps an epoch still reports progress
#   worker-flush      a worker's lines reach a pipe or file as they happen, not at its exit
#   server-stopped    a local run's server stopped by SIGTERM (exit 0) is named, not the worker that lost it,
#                     and an earlier run's outputs in --out are not left looking like its own (nor
#                     deleted by a run refused before it trains: a bad flag, a server's check, bad data)
#   compare-partial   --compare writes the variants that finished when a later one fails
#   compare-interrupted  Ctrl-C (SIGINT) to --compare's driver writes the finished variants and the one it
#                     stopped (it exited by the signal, writing nothing), and exits 130
#   tests/train/check_reports.sh RDMAPS_TRAIN OUT_DIR CASE SOURCE_ROOT
set -euo pipefail
train=$1; out=$2; case=$3; root=$4
rm -rf "$out"
mkdir -p "$out"
py() { /usr/bin/python3 -c "$@"; }
fail() { echo "FAILED ($case): $*"; exit 1; }
free_port() { "$(dirname "$0")/../common/free_ports.py"; }  # below the ephemeral range (tests/common)

# A server and one worker, by hand (docs/cluster.md), over tcp; the worker's
# stdout goes to $out/worker.out. Sets server_pid and worker_pid.
start_by_hand() {  # worker flags...
  export RDMAPS_SECRET=rdmaps-check-reports-secret
  local port
  port=$(free_port)
  "$train" --role server --listen "127.0.0.1:$port" --workers 1 --transport tcp >"$out/server.out" 2>"$out/server.err" &
  server_pid=$!
  "$train" --role worker --worker 0 --workers 1 --servers-list "127.0.0.1:$port" --transport tcp \
    --test-limit 200 "$@" >"$out/worker.out" 2>"$out/worker.err" &
  worker_pid=$!
}
# --compare with 2 workers, in the background, until its second variant's
# (BSP's) worker 1 runs. Sets driver and bsp_worker.
compare_until_bsp() {  # epochs
  "$train" --compare --workers 2 --epochs "$1" --train-limit 20000 --test-limit 200 --out "$out/cmp" \
    >"$out/run.out" 2>"$out/run.err" &
  driver=$!
  bsp_worker=""
  for _ in $(seq 1200); do
    grep -q "\[BSP\]" "$out/run.err" && bsp_worker=$(pgrep -P "$driver" -f -- "--role worker --worker 1") && break
    sleep 0.05
  done
  [ -n "$bsp_worker" ] || { kill "$driver"; fail "the BSP variant's worker 1 never started: $(tail -c 600 "$out/run.err")"; }
}
stop_by_hand() {
  kill -KILL "$worker_pid" 2>/dev/null || true
  wait "$worker_pid" 2>/dev/null || true
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}

case $case in
staleness-exact)
  # Worker 1 takes 400 times as long a step: its first push comes after all
  # 300 of worker 0's, 300 updates stale (the servers' histogram counted
  # exactly up to 255 only, and the summary said 256).
  r=$("$train" --virtual-workers 2 --straggler 1:400 --epochs 1 --train-limit 38400 --test-limit 200 --json \
    --out "$out/run" 2>"$out/run.err") || fail "$(cat "$out/run.err")"
  py 'import json,sys
r = json.loads(sys.argv[1])
h, s = r["staleness_histogram"], r["schedule_staleness_histogram"]
assert h == s, f"servers measured {h}, the schedule made {s}"
worst = max(int(t) for t in s)
assert worst == 300, f"the schedule should make one push 300 stale: {s}"
assert r["staleness_max"] == worst, f"staleness_max {r['\''staleness_max'\'']}, the schedule made {worst}"' "$r" ||
    fail "$r"
  ;;
dropped)
  # Four round-robin workers make pushes 3 stale; --tau-max 1 drops them. (A small --lr: the run learns little,
  # for the plot's range below.)
  "$train" --virtual-workers 4 --staleness-policy drop --tau-max 1 --lr 0.002 --epochs 1 --train-limit 6400 --test-limit 200 \
    --out "$out/run" >"$out/table" 2>"$out/run.err" || fail "$(cat "$out/run.err")"
  py 'import json,sys
r = json.load(open(sys.argv[1]))
steps = 4 * (6400 // 4 // 64)
assert r["steps"] == steps, r
assert r["updates_dropped"] >= steps // 4, f"round-robin pushes 3 stale with --tau-max 1 were not dropped: {r}"
assert r["updates"] + r["updates_dropped"] == steps, r
# Every applied push is in the histogram: its pieces over pieces per step are the updates.
pieces = sum(r["schedule_staleness_histogram"].values()) // steps
assert sum(r["staleness_histogram"].values()) == pieces * r["updates"], r
lines = open(sys.argv[2]).read().splitlines()
head = lines[0].split()
assert "dropped" in head, f"the table shows no dropped column: {lines[0]}"
row = lines[1].split()
# ... updates, dropped, bytes moved ("1.2 MB"), staleness, seconds
assert row[-5] == str(r["updates_dropped"]) and row[-6] == str(r["updates"]), lines[:2]' \
    "$out/run/summary.json" "$out/table" || fail "$(cat "$out/run/summary.json" "$out/table")"
  # The progress line's last updates/s is the summary's updates, not its steps (it counted the dropped ones).
  last=$(tr '\r' '\n' <"$out/run.err" | grep '^\[' | tail -1) || true
  py 'import json,re,sys
r = json.load(open(sys.argv[1]))
m = re.search(r"(\d+) updates/s .* ([\d.]+)s\s*$", sys.argv[2])
assert m, sys.argv[2]
rate, t = float(m.group(1)), float(m.group(2))
# The line shows its seconds to a tenth: 0.35 s read as 0.4 put 57 updates where 50 were (a clean clone, session 64).
assert abs(rate * t - r["updates"]) <= 0.05 * r["steps"] + 2 + rate * 0.05, f"{rate} updates/s over {t} s, the summary {r}"
seconds = r["seconds"]
assert abs(t - seconds) <= 0.051, f"the line ends at {t} s, the summary at {seconds}"' \
    "$out/run/summary.json" "$last" || fail "the final progress line: '$last'"
  # A run that learnt little (its pushes dropped) is in the plot: its range stopped at 0.5.
  py 'import csv,re,sys
best = max(float(r["test_accuracy"]) for r in csv.DictReader(open(sys.argv[1])))
low, high = map(float, re.search(r"set yrange \[([\d.]+):([\d.]+)\]", open(sys.argv[2]).read()).groups())
assert best < 0.5 and low <= best <= high, (best, low, high)' "$out/run/metrics.csv" "$out/run/accuracy.gp" ||
    fail "the plot's range: $(grep yrange "$out/run/accuracy.gp"), metrics: $(cat "$out/run/metrics.csv")"
  ;;
csv-columns)
  "$train" --workers 2 --epochs 1 --train-limit 6400 --test-limit 200 --evals-per-epoch 2 --out "$out/run" \
    >/dev/null 2>"$out/run.err" || fail "$(cat "$out/run.err")"
  header=$(head -1 "$out/run/metrics.csv")
  [ "$header" = "run,seconds,epoch,test_accuracy,test_loss,worker0_steps" ] || fail "metrics.csv header: $header"
  for column in ${header//,/ }; do
    grep -q "| \`$column\` |" "$root/docs/observability.md" || fail "docs/observability.md does not describe $column"
  done
  # Worker 0 takes 6400 / 2 / 64 = 50 steps; the summary counts both workers'.
  py 'import csv,json,sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert [r["worker0_steps"] for r in rows] == ["0", "25", "50"], rows
assert json.load(open(sys.argv[2]))["updates"] == 100' "$out/run/metrics.csv" "$out/run/summary.json" ||
    fail "$(cat "$out/run/metrics.csv")"
  ;;
progress-final)
  # 30 steps a worker: the last line drawn must be the end's, epoch 1 of 1.
  "$train" --workers 2 --epochs 1 --train-limit 3840 --test-limit 200 --out "$out/run" >"$out/table" \
    2>"$out/run.err" || fail "$(cat "$out/run.err")"
  last=$(tr '\r' '\n' <"$out/run.err" | grep '^\[' | tail -1) || true
  [[ $last == *"epoch  1.00/1 "* ]] || fail "the progress line ended as: '$last'"
  ;;
worker-progress)
  # 20 steps an epoch (1280 examples, batch 64): at least 4 progress lines each.
  start_by_hand --epochs 2 --train-limit 1280
  wait "$worker_pid" || { stop_by_hand; fail "the worker failed: $(cat "$out/worker.err")"; }
  stop_by_hand
  n=$(grep -c '^progress 0 ' "$out/worker.out") || true
  [ "$n" -ge 8 ] || fail "$n progress lines in 2 epochs of 20 steps: $(cat "$out/worker.out")"
  ;;
worker-flush)
  # Worker 0's first eval line comes right after it starts; it must be in the
  # file while the worker still trains, before its done line. Its whole
  # output (2 epochs of 937 steps: about 45 lines) fits a stdio buffer, so
  # held back it all comes at the exit, done line included.
  start_by_hand --epochs 2 --train-limit 60000 --evals-per-epoch 1
  seen=0
  while kill -0 "$worker_pid" 2>/dev/null; do
    if grep -q '^eval 0 ' "$out/worker.out"; then
      grep -q '^done ' "$out/worker.out" || seen=1
      break
    fi
    sleep 0.05
  done
  stop_by_hand
  [ "$seen" = 1 ] || fail "no eval line reached the file before the worker's end: $(head -3 "$out/worker.out")"
  ;;
server-stopped)
  mkdir -p "$out/run"
  for f in summary.json metrics.csv curve-0.csv curve-4.csv accuracy.png; do echo earlier >"$out/run/$f"; done
  # Refused before it trains, by the driver (--batch), by its server (a
  # --checkpoint-dir it cannot write) or by its workers (a label past 9, which
  # only loading the data shows): the earlier outputs stay (they were
  # deleted, and nothing written in their place).
  data=/usr/share/datasets/fashion-mnist
  mkdir -p "$out/bad-data"
  for f in train-images-idx3-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do ln -s "$data/$f.gz" "$out/bad-data/"; done
  py 'import gzip, sys
labels = bytearray(gzip.open(sys.argv[1]).read())
labels[8 + 5] = 12
open(sys.argv[2], "wb").write(gzip.compress(bytes(labels)))' "$data/train-labels-idx1-ubyte.gz" "$out/bad-data/train-labels-idx1-ubyte.gz"
  for refused in "--batch 100000" "--epochs 1 --checkpoint-dir /proc/rdmaps-none" \
    "--epochs 1 --workers 2 --train-limit 6000 --test-limit 200 --data $out/bad-data"; do
    # shellcheck disable=SC2086
    if "$train" $refused --out "$out/run" >"$out/refused.out" 2>"$out/refused.err"; then
      fail "rdmaps-train $refused ran"
    fi
    case $refused in *bad-data*)
      grep -q "train-labels-idx1-ubyte.gz: label 12 at index 5 is not 0..9" "$out/refused.err" ||
        fail "the label past 9 was not named: $(tail -c 600 "$out/refused.err")" ;;
    esac
    [ "$(cat "$out/run/summary.json")" = earlier ] && [ -f "$out/run/curve-4.csv" ] ||
      fail "rdmaps-train $refused, refused before training, deleted the earlier run's outputs: $(ls "$out/run")"
  done
  "$train" --epochs 30 --train-limit 20000 --test-limit 200 --out "$out/run" >"$out/run.out" 2>"$out/run.err" &
  driver=$!
  for _ in $(seq 600); do grep -q "updates/s" "$out/run.err" && break; sleep 0.05; done
  server=$(pgrep -P "$driver" -f -- "--role server --index 0") || { kill "$driver"; fail "no server child"; }
  kill -TERM "$server"
  status=0
  wait "$driver" || status=$?
  [ "$status" != 0 ] || fail "a run whose server was stopped exited 0"
  grep -q "error (peer-gone): server 0 was stopped by signal 15" "$out/run.err" ||
    fail "the server stopped by SIGTERM was not named: $(tail -c 600 "$out/run.err")"
  left=$(ls "$out/run")
  [ -z "$left" ] || fail "the failed run left the earlier run's outputs as if its own: $left"
  ;;
compare-partial)
  # A worker of the second variant (BSP) killed: the first's figures were thrown away with it.
  compare_until_bsp 1
  kill -KILL "$bsp_worker"
  status=0
  wait "$driver" || status=$?
  [ "$status" != 0 ] || fail "a --compare run with a killed worker exited 0"
  grep -q "BSP failed; writing the 1 variant(s) that finished" "$out/run.err" ||
    fail "the finished variant was not written: $(tail -c 600 "$out/run.err")"
  py 'import json,sys
runs = json.load(open(sys.argv[1]))
assert isinstance(runs, list), "--compare wrote an object, not the array of its variants"
assert [r["run"] for r in runs] == ["sequential SGD"], [r["run"] for r in runs]
assert runs[0]["final_test_accuracy"] > 0.3, runs[0]' "$out/cmp/summary.json" || fail "$(cat "$out/cmp/summary.json")"
  ;;
compare-interrupted)
  compare_until_bsp 4
  # Once the BSP run reported progress: its steps so far are in what is written.
  for _ in $(seq 1200); do
    grep -q "\[BSP\] epoch .* pushed [1-9]" "$out/run.err" && break
    sleep 0.05
  done
  kill -INT "$driver"
  status=0
  wait "$driver" || status=$?
  [ "$status" = 130 ] || fail "exited $status, not 130 (128 + SIGINT): $(tail -c 600 "$out/run.err")"
  grep -q "BSP interrupted by signal 2 (Interrupt); wrote it as it stood, with the 1 variant(s) before it" \
    "$out/run.err" || fail "the interruption was not said: $(tail -c 600 "$out/run.err")"
  py 'import json,sys
runs = json.load(open(sys.argv[1]))
assert [r["run"] for r in runs] == ["sequential SGD", "BSP"], [r["run"] for r in runs]
assert runs[0]["final_test_accuracy"] > 0.3 and "failure" not in runs[0], runs[0]
assert runs[1]["failure"] == "interrupted by signal 2 (Interrupt)", runs[1]
assert runs[1]["steps"] > 0, runs[1]' "$out/cmp/summary.json" || fail "$(cat "$out/cmp/summary.json")"
  grep -q "^BSP," "$out/cmp/metrics.csv" || fail "metrics.csv lacks the stopped run's curve: $(cat "$out/cmp/metrics.csv")"
  ;;
*)
  fail "no such case"
  ;;
esac
echo "$case: ok"
