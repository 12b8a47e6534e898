#!/usr/bin/env bash
# The consistency flags must reach the workers: fully async never skips a
# pull, SSP skips some (its communication saving), BSP keeps staleness tiny.
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
check "$ssp" "r['pulls_skipped'] > 0 and r['bytes_pulled'] < r['bytes_pushed']" "--staleness 3 skipped no pull"
bsp=$(run --sync --dc off)
check "$bsp" "r['staleness_max'] <= 2" "--sync let staleness exceed what two workers in lockstep allow"
# A diverging run stops with the reason instead of reporting chance accuracy.
if diverged=$("$train" --workers 2 --epochs 1 --train-limit 6000 --test-limit 500 --transport shm --out "$out" \
    --lr 50 2>&1); then
  echo "FAILED: --lr 50 finished as if it had trained"; exit 1
fi
grep -q "training diverged; lower --lr" <<<"$diverged" || { echo "FAILED: no divergence message: $diverged"; exit 1; }
echo "modes reach the workers: async, SSP and BSP behave as configured; divergence stops the run"
