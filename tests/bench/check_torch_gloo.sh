#!/usr/bin/env bash
# bench/compare_torch_gloo.sh with a stand-in example whose rank 1 gives no
# result (a dead worker): the benchmark stops naming it. It summed the
# workers that printed, and reported half the rate (a failed run as 0).
#   tests/bench/check_torch_gloo.sh BUILD_DIR OUT_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
out=$(mkdir -p "$2" && cd "$2" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
fail() { echo "FAILED: $*"; exit 1; }
cat >"$out/example.py" <<'PY'
import os
if os.environ.get("RANK", "0") == "0":
    print('result {"samples_per_s": 100, "test_accuracy": 0.5}', flush=True)
PY
if msg=$(EXAMPLE="$out/example.py" "$root/bench/compare_torch_gloo.sh" "$build" 2 1 1 2>&1); then
  fail "a run with a worker's result missing passed: $msg"
fi
[[ $msg == *"gloo-ddp: 1 of 2 workers gave a result"* ]] || fail "not named: $msg"
echo "compare_torch_gloo.sh: a missing worker's result stops the benchmark"
