#!/usr/bin/env bash
# Parameter-server push throughput over tcp against ucx_perftest's ucp_am_bw at
# the same message size (the shard size), interleaved pairs, loopback only.
#   bench/compare_ps_push.sh BUILD_DIR [FLOATS] [REPS]
set -euo pipefail
build=${1:?build dir}; floats=${2:-16777216}; reps=${3:-3}
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
port=$((20000 + RANDOM % 20000))
printf "# tcp, pieces of 1 MiB, %s floats per push, %s pairs; ucx_perftest MB/s = MiB/s\n" "$floats" "$reps"
printf "%5s %16s %16s %8s\n" pair ucp_am_bw_GBps push_GBps ratio
for ((r = 1; r <= reps; r++)); do
  UCX_TLS=tcp ucx_perftest -p "$port" -t ucp_am_bw -s 1048576 -n 512 >/dev/null 2>&1 &
  sleep 0.3
  ucx=$(UCX_TLS=tcp ucx_perftest 127.0.0.1 -p "$port" -t ucp_am_bw -s 1048576 -n 512 2>/dev/null | awk '/Final:/ {print $7 * 1048576 / 1e9}')
  wait
  ours=$("$build/bench/rdmaps-perf" ps --transport tcp --floats "$floats" --rule sgd --json 2>/dev/null | sed 's/.*"push_GBps":\([0-9.e+-]*\).*/\1/')
  printf "%5s %16.2f %16.2f %8.2f\n" "$r" "$ucx" "$ours" "$(echo "$ours / $ucx" | bc -l)"
done
