#!/usr/bin/env bash
# The consistency flags must reach the workers: fully async never skips a
# pull, nor does SSP unless --skip-pulls asks for its communication saving;
# BSP keeps staleness tiny.
#   tests/train/check_modes.sh RDMAPS_TRAIN OUT_DIR
set -euo pipefail
train=$1; out=$2
run() { "$train" --workers 2 --epochs 1 --train-limit 6000 --test-limit 500 --transport shm --out "$out" --json "$@" 2>/dev/null; }
check() {  # json python-condition message
  /usr/bin/python3 -c "import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if ($2) else 1)" "$1" \
    || { echo "FAILED: $3: $1"; exit 1; }
}
async=$(run --async --dc off)
check "$async" "r['pulls_skipped'] == 0" "--async skipped pulls"
ssp=$(run --staleness 3 --dc off)
check "$ssp" "r['pulls_skipped'] == 0" "--staleness 3 skipped pulls without --skip-pulls"
skipping=$(run --staleness 3 --dc off --skip-pulls)
check "$skipping" "r['pulls_skipped'] > 0 and r['bytes_pulled'] < r['bytes_pushed']" "--staleness 3 --skip-pulls skipped no pull"
bsp=$(run --sync --dc off)
check "$bsp" "r['staleness_max'] <= 2" "--sync let staleness exceed what two workers in lockstep allow"
# The schedule reaches the servers: one worker in lockstep is deterministic, so
# a decaying rate must end elsewhere than a constant one.
constant=$(run --workers 1 --sync --dc off --schedule constant)
cosine=$(run --workers 1 --sync --dc off --schedule cosine)
/usr/bin/python3 -c "import json,sys; a,b=(json.loads(x) for x in sys.argv[1:]); sys.exit(0 if a['final_test_accuracy'] != b['final_test_accuracy'] else 1)" "$constant" "$cosine" \
  || { echo "FAILED: --schedule cosine trained exactly like constant: $cosine"; exit 1; }
again=$(run --workers 1 --sync --dc off --schedule constant)
check "$again" "r['final_test_accuracy'] == $(/usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])['final_test_accuracy'])" "$constant")" \
  "one worker in lockstep is not deterministic, so the schedule comparison means nothing"
# Server options from the environment reach every process of the job.
corrected=$(RDMAPS_MS_BIAS_CORRECTION=off "$train" --workers 1 --epochs 1 --train-limit 640 --test-limit 100 \
    --transport shm --dc adaptive --out "$out" 2>&1)
grep -q "ms-bias-correction off" <<<"$corrected" || { echo "FAILED: RDMAPS_MS_BIAS_CORRECTION=off not in effect: $corrected"; exit 1; }
# ... and so do parameter-server flags given to rdmaps-train.
bounded=$("$train" --workers 1 --epochs 1 --train-limit 640 --test-limit 100 --transport shm --dc adaptive \
    --dc-bound 0.5 --out "$out" 2>&1)
grep -q "dc-bound 0.5" <<<"$bounded" || { echo "FAILED: --dc-bound 0.5 not in effect: $bounded"; exit 1; }
# Refused naming the flag and the value, under a limit (one accepted would train a default run).
refused() {  # expected-text args...
  local want=$1 err
  shift
  if err=$(timeout 30 "$train" "$@" --out "$out" 2>&1); then echo "FAILED: accepted: $*"; exit 1; fi
  grep -qF -- "$want" <<<"$err" || { echo "FAILED: $* refused without naming '$want': $err"; exit 1; }
}
refused "--schedule: 'sometimes'" --schedule sometimes
# --metrics with --json: the ports are printed at the start (docs/observability.md),
# on stderr, so stdout is still the JSON summary alone.
# Two ports in a row (the server's, then the worker's), below the ephemeral range: the one after a port
# bind(0) found free was taken by an outgoing connection ("the port is in use", session 56).
port=$("$(dirname "$0")/../common/free_ports.py" 2)
metered=$("$train" --workers 1 --epochs 1 --train-limit 640 --test-limit 100 --transport shm --out "$out" --json \
    --metrics "127.0.0.1:$port" 2>"$out/metrics.err") ||
  { echo "FAILED: --json --metrics: $(cat "$out/metrics.err")"; exit 1; }
check "$metered" "'final_test_accuracy' in r" "--json --metrics: stdout is not the summary"
grep -qF "metrics at http://127.0.0.1:$port/metrics" "$out/metrics.err" ||
  { echo "FAILED: --json --metrics did not say where the metrics are: $(cat "$out/metrics.err")"; exit 1; }
# One endpoint (virtual workers serve none): one address, not a range from it to itself.
port=$("$(dirname "$0")/../common/free_ports.py" 1)
"$train" --virtual-workers 2 --epochs 1 --train-limit 640 --test-limit 100 --transport shm --out "$out" --json \
  --metrics "127.0.0.1:$port" >/dev/null 2>"$out/virtual-metrics.err" ||
  { echo "FAILED: --virtual-workers --metrics: $(cat "$out/virtual-metrics.err")"; exit 1; }
grep -qF "metrics at http://127.0.0.1:$port/metrics (server 0) (servers only" "$out/virtual-metrics.err" ||
  { echo "FAILED: one metrics endpoint said as a range: $(cat "$out/virtual-metrics.err")"; exit 1; }
# A worker says where its metrics are before it connects, and serves them
# while it waits for servers not up yet (the connect may wait for minutes).
nobody=$("$(dirname "$0")/../common/free_ports.py" 1)
"$train" --role worker --servers-list "127.0.0.1:$nobody" --workers 1 --transport tcp --metrics 127.0.0.1:0 \
  2>"$out/waiting.err" &
waiting=$!
for _ in $(seq 100); do grep -q "metrics at http://" "$out/waiting.err" && break; sleep 0.1; done
address=$(sed -n 's|.*worker 0: metrics at http://\([^/]*\)/metrics.*|\1|p' "$out/waiting.err")
scraped=$(curl -sf "http://$address/metrics" || true)
kill "$waiting" 2>/dev/null; wait "$waiting" 2>/dev/null || true
[ -n "$address" ] || { echo "FAILED: a worker waiting for its server did not say where its metrics are: $(cat "$out/waiting.err")"; exit 1; }
grep -q "^rdmaps_worker_servers_joined{worker=\"0\"} 0" <<<"$scraped" ||
  { echo "FAILED: a worker waiting for its server served no metrics at $address: $scraped"; exit 1; }
# --gpu-shard reaches the servers: they train on the GPU, or refuse saying why.
if gpu=$("$train" --workers 2 --epochs 1 --train-limit 2000 --test-limit 200 --transport shm --out "$out" \
    --gpu-shard --json 2>"$out/gpu-shard.err"); then
  check "$gpu" "r['final_test_accuracy'] > 0.3" "--gpu-shard trained nothing"
else
  grep -q "gpu-shard needs a CUDA device" "$out/gpu-shard.err" \
    || { echo "FAILED: --gpu-shard failed without saying it needs a CUDA device:"; cat "$out/gpu-shard.err"; exit 1; }
fi
# Stragglers reach the workers: one fixed worker sleeps in each of its
# steps; a random one makes every worker sleep in about 1 step in workers.
fixed=$(run --staleness 3 --straggler 1:2)
check "$fixed" "r['straggled_steps'] == r['updates'] // 2" "--straggler 1:2 did not slow exactly worker 1's steps"
random=$(run --staleness 3 --straggler random:2)
check "$random" "0.3 * r['updates'] <= r['straggled_steps'] <= 0.7 * r['updates']" \
  "--straggler random:2 did not slow about half the steps (chance 1 in 2 workers)"
# A straggler sleeps between its gradient and its push, as a slow node
# computes: the other worker's steps meanwhile make its gradients stale (max
# 10-17 here). Slept after the push, its gradients were fresh (max 2-4).
slow=$(run --async --dc off --straggler 1:8)
check "$slow" "r['staleness_max'] >= 7" "--straggler 1:8: the straggler's gradients were not stale"
for bad in random 1 random:0.5; do refused "--straggler: '$bad'" --workers 2 --straggler "$bad"; done
refused "--straggler: worker 2 does not exist (the job has 2 workers)" --workers 2 --straggler 2:4
# A diverging run stops with the reason instead of reporting chance accuracy.
# Virtual workers repeat bit for bit: it goes to NaN at step 5 each time; two
# real workers at --lr 50 sometimes collapse with a finite loss instead (1 run
# in 30 on a loaded machine), which the loss check does not call divergence.
if diverged=$("$train" --virtual-workers 2 --epochs 1 --train-limit 6000 --test-limit 500 --transport shm \
    --out "$out" --lr 50 2>&1); then
  echo "FAILED: --lr 50 finished as if it had trained"; exit 1
fi
grep -q "training diverged; lower --lr" <<<"$diverged" || { echo "FAILED: no divergence message: $diverged"; exit 1; }
# One step at --lr 1e38: its loss was finite, the final model is not (its
# chance accuracy was reported, exit 0).
if diverged=$("$train" --virtual-workers 1 --dc off --epochs 1 --train-limit 64 --test-limit 100 --transport shm \
    --out "$out" --lr 1e38 2>&1); then
  echo "FAILED: a final model of Inf or NaN finished as if it had trained"; exit 1
fi
grep -q "the final model's test loss is .* training diverged; lower --lr" <<<"$diverged" ||
  { echo "FAILED: no divergence message for the final model: $diverged"; exit 1; }
# An output directory that cannot be written fails before training, naming it.
for unwritable in /proc/rdmaps-out /dev/full/rdmaps-out; do
  if why=$("$train" --workers 1 --epochs 1 --train-limit 640 --test-limit 100 --out "$unwritable" 2>&1); then
    echo "FAILED: --out $unwritable accepted: $why"; exit 1
  fi
  grep -q "$unwritable.*(--out)\|cannot write $unwritable" <<<"$why" || { echo "FAILED: no clear --out error: $why"; exit 1; }
done
# The progress line's updates/s counts a worker's step once, as the summary's
# updates do, whatever the pieces its push is cut into (it counted each of
# the 15 pieces of a push at --shard-floats 16384: 3562/s against 234/s).
"$train" --workers 2 --epochs 3 --train-limit 12000 --test-limit 500 --transport shm --shard-floats 16384 \
  --out "$out/rate" >/dev/null 2>"$out/rate.log"
shown=$(tr '\r' '\n' <"$out/rate.log" | sed -n 's/.* \([0-9]*\) updates\/s .*/\1/p' | tail -1)
/usr/bin/python3 -c "import json,sys; r=json.load(open(sys.argv[1])); true=r['updates']/r['seconds']; sys.exit(0 if true/2 <= float(sys.argv[2] or 0) <= true*2 else 1)" \
  "$out/rate/summary.json" "$shown" ||
  { echo "FAILED: the progress line showed ${shown:-no} updates/s; the summary: $(cat "$out/rate/summary.json")"; exit 1; }
echo "modes reach the workers: async, SSP and BSP behave as configured; schedules reach the servers; stragglers slow the steps they should; divergence stops the run; an unwritable --out is refused; updates/s counts steps, not pieces"
