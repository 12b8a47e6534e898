#!/usr/bin/env bash
# Runs rdmaps-perf transport and ucx_perftest side by side on the same
# transport, interleaved, and prints the median of each plus the median of the
# per-pair ratios (each rdmaps run against the ucx_perftest run just before
# it: tcp loopback on a shared VM drifts by 2x within minutes, and pairing
# cancels that drift).
#   bench/compare_ucx_perftest.sh BUILD_DIR TRANSPORT OP SIZES [REPS]
#   e.g. bench/compare_ucx_perftest.sh build shm put 65536,1048576,16777216 3
# OP: put (ucp_put_bw), am (ucp_am_bw), lat (8-byte ucp_put_lat vs put p50).
# With two or more CPUs each tool's target side runs on CPU 0 and its
# initiator on CPU 1 (taskset), so the scheduler cannot stack both on one
# core mid-run; PIN=0 lets them float. Each run moves MIB_PER_RUN MiB
# (default 256, at most MAX_ITERS messages, default 20000): longer runs
# narrow the spread between pairs.
set -euo pipefail
build=${1:?build dir}; transport=${2:?tcp|shm}; op=${3:?put|am|lat}; sizes=${4:?sizes}; reps=${5:-3}
perf="$build/bench/rdmaps-perf"
[[ -x $perf ]] || { echo "compare_ucx_perftest.sh: $perf not found (build it first)" >&2; exit 1; }
command -v ucx_perftest >/dev/null || { echo "compare_ucx_perftest.sh: ucx_perftest not found: apt-get install ucx-utils" >&2; exit 1; }
case $transport in
  tcp) tls=tcp ;;
  shm) tls=posix,cma,self ;;
  *) echo "compare_ucx_perftest.sh: transport must be tcp or shm" >&2; exit 1 ;;
esac
log=$(mktemp)  # ucx_perftest's stderr, shown when a run fails
trap 'rm -f "$log"' EXIT
port=$((20000 + RANDOM % 20000))
# Both tools on loopback only: UCX would otherwise add this host's other
# interfaces as extra rails, which makes runs less comparable.
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
target=(); initiator=()
if [ "${PIN:-1}" != 0 ] && [ "$(nproc)" -ge 2 ]; then target=(taskset -c 0); initiator=(taskset -c 1); fi
pinning=$([ ${#target[@]} -gt 0 ] && echo "target on CPU 0, initiator on CPU 1" || echo "unpinned")

number() {  # value tool size [why] -> the value, or a message and failure when it is no number
  [[ $1 =~ ^[0-9.]+([eE][-+]?[0-9]+)?$ ]] && { echo "$1"; return 0; }
  echo "compare_ucx_perftest.sh: $2 at $3 bytes gave no number${4:+ ($4)}" >&2
  return 1
}
ucx_run() {  # test size iters field -> that field of the "Final:" line (3: latency, 7: MB/s)
  : >"$log"
  UCX_TLS=$tls "${target[@]}" ucx_perftest -p "$port" -t "$1" -s "$2" -n "$3" >/dev/null 2>>"$log" &
  local srv=$! v rc=0
  sleep 0.3
  v=$(UCX_TLS=$tls "${initiator[@]}" ucx_perftest 127.0.0.1 -p "$port" -t "$1" -s "$2" -n "$3" 2>>"$log" |
    awk -v f="$4" '/Final:/ {print $f}') || rc=$?
  # A client that failed (e.g. could not connect) leaves the server waiting for it.
  [ "$rc" = 0 ] || { v=; kill "$srv" 2>/dev/null || true; }
  wait "$srv" 2>/dev/null || true
  number "$v" "ucx_perftest -t $1" "$2" "client exit $rc" || { tail -n 5 "$log" >&2; return 1; }
}
ours_run() {  # op size iters field -> that field of the JSON row; the target side started here, like ucx_perftest's
  local p=$((port + 1)) row wrong rc=0
  "${target[@]}" "$perf" transport --role server --listen "127.0.0.1:$p" --transport "$transport" >/dev/null &
  local srv=$!
  sleep 0.3
  row=$("${initiator[@]}" "$perf" transport --peer "127.0.0.1:$p" --transport "$transport" --op "$1" --sizes "$2" \
    --iters "$3" --json) || rc=$?
  if [ "$rc" != 0 ]; then
    # A client that failed (e.g. could not connect) leaves the server waiting for it.
    kill "$srv" 2>/dev/null || true
    wait "$srv" 2>/dev/null || true
  fi
  wrong=$(sed -n 's/.*"wrong":\([0-9]*\).*/\1/p' <<<"$row")
  if [ -n "$row" ] && [ "$wrong" != 0 ]; then
    echo "compare_ucx_perftest.sh: rdmaps-perf transport --op $1 at $2 bytes moved ${wrong:-?} wrong bytes; row refused" >&2
    return 1
  fi
  if [ "$rc" != 0 ]; then
    echo "compare_ucx_perftest.sh: rdmaps-perf transport --op $1 at $2 bytes failed (exit $rc)" >&2
    return 1
  fi
  wait "$srv" || { echo "compare_ucx_perftest.sh: rdmaps-perf transport server at $2 bytes failed (exit $?)" >&2; return 1; }
  number "$(sed -n "s/.*\"$4\":\([0-9.e+]*\).*/\1/p" <<<"$row")" "rdmaps-perf transport --op $1" "$2"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

printf "# %s over %s, %s reps interleaved, %s, medians; ucx_perftest MB/s = MiB/s (it divides by 2^20)\n" "$op" "$transport" "$reps" "$pinning"
if [ "$op" = lat ]; then
  printf "%10s %16s %16s %8s %8s %8s\n" bytes ucp_put_lat_us rdmaps_p50_us ratio min max
else
  printf "%10s %14s %14s %8s %8s %8s\n" bytes ucx_MiBps rdmaps_MiBps ratio min max
fi
IFS=, read -ra list <<<"$sizes"
for size in "${list[@]}"; do
  iters=$(( ${MIB_PER_RUN:-256} * 1048576 / size )); (( iters < 64 )) && iters=64; (( iters > ${MAX_ITERS:-20000} )) && iters=${MAX_ITERS:-20000}
  [ "$op" = lat ] && iters=20000
  ucx=(); ours=()
  for ((r = 0; r < reps; r++)); do
    # Each run's number or a message and exit: a blank would only fail later, in bc.
    case $op in
      put) u=$(ucx_run ucp_put_bw "$size" "$iters" 7); o=$(ours_run put "$size" "$iters" bw_MiBps) ;;
      am)  u=$(ucx_run ucp_am_bw "$size" "$iters" 7); o=$(ours_run am "$size" "$iters" bw_MiBps) ;;
      lat) u=$(ucx_run ucp_put_lat "$size" "$iters" 3); o=$(ours_run put "$size" "$iters" lat_p50_us) ;;
    esac
    ucx+=("$u"); ours+=("$o")
  done
  u=$(printf '%s\n' "${ucx[@]}" | median); o=$(printf '%s\n' "${ours[@]}" | median)
  ratios=$(for ((r = 0; r < reps; r++)); do echo "${ours[r]} / ${ucx[r]}" | bc -l; done)
  ratio=$(echo "$ratios" | median); lo=$(echo "$ratios" | sort -g | head -1); hi=$(echo "$ratios" | sort -g | tail -1)
  if [ "$op" = lat ]; then
    printf "%10s %16.3f %16.3f %8.2f %8.2f %8.2f\n" "$size" "$u" "$o" "$ratio" "$lo" "$hi"
  else
    printf "%10s %14.1f %14.1f %8.2f %8.2f %8.2f\n" "$size" "$u" "$o" "$ratio" "$lo" "$hi"
  fi
done
