#!/usr/bin/env bash
# The pull of rdmaps.torch's step() (bench/torch_pull.py: 1 server, 1 worker,
# MLP 784-256-128-10, one shard spanning its six tensors) with the parameters
# in one buffer (it lands in them) or each in its own (copied out of the
# receive region), over tcp and over shm with puts into the parameters,
# interleaved; bound: the same round's one-message latency of that many bytes
# (rdmaps-perf transport, p50: --op am, or --op put for the shm-put row, whose
# pulls land by put).
#   bench/torch_landing.sh BUILD_DIR [REPS] [PULLS]
set -euo pipefail
build=${1:?build dir}; reps=${2:-3}; pulls=${3:-2000}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/$build/python" UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
py=/usr/bin/python3
bytes=940584

field() { "$py" -c "import json, sys; print(json.loads(sys.stdin.read().split('result ', 1)[-1])['$1'])"; }

printf "# pulls of %s bytes, %s per run; us: p50 (p10-p90)\n" "$bytes" "$pulls"
printf "%4s %-8s %12s %22s %22s %10s %12s\n" rep transport "bound p50" "flat off" "flat on" "on / off" "in place"
for ((r = 1; r <= reps; r++)); do
  for transport in tcp shm-put; do
    tls=${transport%-put}
    op=am; [[ $transport == shm-put ]] && op=put
    # --iters too: the latency samples stop at --iters (auto: 285 at this size).
    bound=$("$build/bench/rdmaps-perf" transport --transport "$tls" --op "$op" --sizes "$bytes" --iters 500 --lat-iters 500 --json |
      tail -1 | "$py" -c "import json, sys; print(round(json.load(sys.stdin)['lat_p50_us'], 1))")
    declare -A p50 spread landed
    for flat in off on; do
      env=(RDMAPS_TRANSPORT="$tls")
      [[ $transport == shm-put ]] && env+=(RDMAPS_PUT_LANDING=on)
      out=$(env "${env[@]}" "$py" -m rdmaps.launch -n 2 bench/torch_pull.py --flat-parameters "$flat" \
        --pulls "$pulls" 2>&1 | grep "result {")
      p50[$flat]=$(field p50_us <<< "$out")
      spread[$flat]="$(field p10_us <<< "$out")-$(field p90_us <<< "$out")"
      landed[$flat]=$(field in_place_per_pull <<< "$out")
    done
    ratio=$("$py" -c "print(f'{${p50[on]} / ${p50[off]}:.2f}')")
    printf "%4s %-8s %12s %22s %22s %10s %12s\n" "$r" "$transport" "$bound" "${p50[off]} (${spread[off]})" \
      "${p50[on]} (${spread[on]})" "$ratio" "${landed[off]}/${landed[on]}"
  done
done
