#!/usr/bin/env bash
# Parameter-server push throughput over tcp against ucx_perftest's ucp_am_bw at
# the same message size (the shard size), interleaved pairs, loopback only.
#   bench/compare_ps_push.sh BUILD_DIR [FLOATS] [REPS]
set -euo pipefail
build=${1:?build dir}; floats=${2:-16777216}; reps=${3:-3}
perf="$build/bench/rdmaps-perf"
[[ -x $perf ]] || { echo "compare_ps_push.sh: $perf not found (build it first)" >&2; exit 1; }
command -v ucx_perftest >/dev/null || { echo "compare_ps_push.sh: ucx_perftest not found: apt-get install ucx-utils" >&2; exit 1; }
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
port=$((20000 + RANDOM % 20000))
log=$(mktemp)  # the tools' stderr, shown when a run fails
trap 'rm -f "$log"' EXIT
failed() { echo "compare_ps_push.sh: $1 failed (pair $r):" >&2; tail -n 5 "$log" >&2; exit 1; }
printf "# tcp, pieces of 1 MiB, %s floats per push, %s pairs; ucx_perftest MB/s = MiB/s\n" "$floats" "$reps"
printf "%5s %16s %16s %8s\n" pair ucp_am_bw_GBps push_GBps ratio
for ((r = 1; r <= reps; r++)); do
  : >"$log"
  UCX_TLS=tcp ucx_perftest -p "$port" -t ucp_am_bw -s 1048576 -n 512 >/dev/null 2>>"$log" &
  srv=$!
  sleep 0.3
  if ! ucx=$(UCX_TLS=tcp ucx_perftest 127.0.0.1 -p "$port" -t ucp_am_bw -s 1048576 -n 512 2>>"$log" |
    awk '/Final:/ {print $7 * 1048576 / 1e9}') || [ -z "$ucx" ]; then
    kill "$srv" 2>/dev/null || true  # a client that failed leaves the server waiting for it
    wait "$srv" 2>/dev/null || true
    failed "ucx_perftest -t ucp_am_bw"
  fi
  wait
  : >"$log"
  if ! ours=$("$perf" ps --transport tcp --floats "$floats" --rule sgd --json 2>"$log" |
    sed -n 's/.*"push_GBps":\([0-9.e+-]*\).*/\1/p') || [ -z "$ours" ]; then
    failed "rdmaps-perf ps"
  fi
  printf "%5s %16.2f %16.2f %8.2f\n" "$r" "$ucx" "$ours" "$(echo "$ours / $ucx" | bc -l)"
done
