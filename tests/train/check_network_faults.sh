#!/bin/bash
# A real rdmaps-train job across two network namespaces made here: the server
# in one, its two workers in the other, joined by a veth pair on this test's
# own addresses (no route out: nothing leaves the namespaces). Over tcp:
#   1. 1 % packet loss each way (and 5 ms delay where the kernel has netem):
#      the job (two virtual workers in a fixed schedule: deterministic) learns
#      exactly what it learns on a clean link, every test loss bit for bit;
#   2. a 5 s partition in the middle of a run: every process then either
#      finishes or fails with an error naming its peer; none hangs.
# Needs root (ip netns, iptables); says why and skips (77) without.
# usage: check_network_faults.sh RDMAPS_TRAIN OUT_DIR
# By hand, PARTITION=40 makes the partition 40 s (longer than UCX's own
# keepalive, about 20 s) and PEER_TIMEOUT=SEC gives every process
# --peer-timeout SEC (0: UCX's keepalive).
set -euo pipefail
train=$1 out=$2
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v iptables >/dev/null; then
  echo "SKIP: needs root, iproute2 and iptables (scripts/install-deps.sh installs them)"
  exit 77
fi
rm -rf "$out" && mkdir -p "$out"
tag=$$
srv=rdmaps-srv-$tag wrk=rdmaps-wrk-$tag
net=10.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$wrk" 2>/dev/null || true
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$out"/*.log; do echo "== $f"; tail -n 6 "$f"; done; exit 1; }

ip netns add "$srv" || { echo "SKIP: cannot create network namespaces here"; exit 77; }
ip netns add "$wrk"
ip link add "vs$tag" type veth peer name "vw$tag"
ip link set "vs$tag" netns "$srv"
ip link set "vw$tag" netns "$wrk"
ip -n "$srv" addr add "$net.1/24" dev "vs$tag"
ip -n "$wrk" addr add "$net.2/24" dev "vw$tag"
for ns in "$srv" "$wrk"; do ip -n "$ns" link set lo up; done
ip -n "$srv" link set "vs$tag" up
ip -n "$wrk" link set "vw$tag" up
for ns in "$srv" "$wrk"; do
  ip -n "$ns" route | grep -q '^default' && fail "namespace $ns has a route out"
done
ip link show "vs$tag" >/dev/null 2>&1 && fail "the veth pair is still in the host's namespace"

RDMAPS_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')  # off loopback: authenticated
export RDMAPS_SECRET
job=(--workers 2 --servers 1 --epochs "${EPOCHS:-3}" --train-limit 12000 --test-limit 2000 --transport tcp --seed 11
     --data /usr/share/datasets/fashion-mnist ${PEER_TIMEOUT:+--peer-timeout "$PEER_TIMEOUT"})
partition=${PARTITION:-5}
port=$((20000 + RANDOM % 20000))
start_server() {  # start_server NAME: sets $spid
  ip netns exec "$srv" env UCX_NET_DEVICES="vs$tag" "$train" --role server --listen "$net.1:$port" "${job[@]}" \
    2>"$out/$1-server.log" &
  spid=$!
  pids+=("$spid")
}
run_virtual() {  # run_virtual NAME: the server, and both workers in one process, stepping in a fixed schedule
  start_server "$1"
  ip netns exec "$wrk" env UCX_NET_DEVICES="vw$tag" "$train" --role virtual --virtual-workers 2 \
    --delay round-robin --servers-list "$net.1:$port" "${job[@]}" >"$out/$1-w0.out" 2>"$out/$1-w0.log" &
  wpids=($!)
  pids+=($!)
}
run_job() {  # run_job NAME: the server and two worker processes, sets $spid $wpids
  start_server "$1"
  wpids=()
  for w in 0 1; do
    ip netns exec "$wrk" env UCX_NET_DEVICES="vw$tag" "$train" --role worker --worker $w \
      --servers-list "$net.1:$port" "${job[@]}" >"$out/$1-w$w.out" 2>"$out/$1-w$w.log" &
    wpids+=($!)
    pids+=($!)
  done
}
finish_job() {  # finish_job NAME: every process exits 0
  for p in "${wpids[@]}"; do wait "$p" || fail "$1: a worker failed"; done
  wait "$spid" || fail "$1: the server failed"
  port=$((port + 1))
}
accuracy() { awk '$1 == "eval" { a = $4 } END { print a }' "$1"; }
curve() { awk '$1 == "eval" { $7 = ""; print }' "$1"; }  # the eval lines without their age (wall time)
drop_all() {  # drop_all -A|-D: a partition, both ways
  ip netns exec "$srv" iptables "$1" INPUT -i "vs$tag" -j DROP
  ip netns exec "$wrk" iptables "$1" INPUT -i "vw$tag" -j DROP
}

now() { date +%s.%N; }
seconds_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
start=$(now)
run_virtual clean
finish_job clean
clean_s=$(seconds_since "$start")
clean=$(accuracy "$out/clean-w0.out")

# 1. Loss (and delay where netem exists).
delay="no delay: this kernel has no sch_netem"
if ip netns exec "$srv" tc qdisc add dev "vs$tag" root netem delay 5ms loss 1% 2>/dev/null; then
  ip netns exec "$wrk" tc qdisc add dev "vw$tag" root netem delay 5ms loss 1%
  delay="5 ms delay and 1 % loss by netem"
else
  ip netns exec "$srv" iptables -A INPUT -i "vs$tag" -m statistic --mode random --probability 0.01 -j DROP
  ip netns exec "$wrk" iptables -A INPUT -i "vw$tag" -m statistic --mode random --probability 0.01 -j DROP
  delay="1 % loss by iptables ($delay)"
fi
start=$(now)
run_virtual lossy
finish_job lossy
lossy_s=$(seconds_since "$start")
lossy=$(accuracy "$out/lossy-w0.out")
dropped=$(ip netns exec "$srv" iptables -L INPUT -v -x -n 2>/dev/null | awk '/statistic/ { print $1 }')
# By iptables, its count says whether the link lost anything: a run that lost nothing tested nothing.
[[ $delay != *iptables* ]] || [ "${dropped:-0}" -gt 0 ] || fail "the lossy run lost no packet at the server (iptables counted ${dropped:-none})"
[ "$(curve "$out/lossy-w0.out")" = "$(curve "$out/clean-w0.out")" ] ||
  fail "over the lossy link the job learned something else: accuracy $lossy, $clean on the clean link"
awk -v a="$lossy" 'BEGIN { exit !(a >= 0.70) }' || fail "accuracy $lossy: the job did not learn"
ip netns exec "$srv" iptables -F INPUT
ip netns exec "$wrk" iptables -F INPUT
ip netns exec "$srv" tc qdisc del dev "vs$tag" root 2>/dev/null || true
ip netns exec "$wrk" tc qdisc del dev "vw$tag" root 2>/dev/null || true

# 2. A 5 s partition in the middle of a run.
start=$(now)
run_job partition
# In the middle of the run: once a worker reported steps (after a fixed 2 s the workers might not have connected).
for _ in $(seq 1200); do grep -q '^progress' "$out/partition-w0.out" && break; sleep 0.05; done
grep -q '^progress' "$out/partition-w0.out" || fail "worker 0 reported no step in 60 s: $(tail -n 3 "$out/partition-w0.log")"
drop_all -A
sleep "$partition"
drop_all -D
healed=$(date +%s)
deadline=$((healed + 60))  # the job's own length plus TCP's retransmission back-off: generous, but bounded
for p in "$spid" "${wpids[@]}"; do
  while kill -0 "$p" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "a process still runs 60 s after the partition healed: it hangs"
    sleep 0.2
  done
done
outcome=""
for w in 0 1; do
  if wait "${wpids[$w]}"; then
    outcome+="worker $w finished; "
  else
    grep -q "$net.1" "$out/partition-w$w.log" || fail "worker $w failed without naming its server"
    outcome+="worker $w failed naming its server; "
  fi
done
if wait "$spid"; then
  outcome+="the server finished"
else
  grep -qE "worker [01]" "$out/partition-server.log" ||
    fail "the server failed without naming a worker: $(tail -n 3 "$out/partition-server.log")"
  outcome+="the server failed naming a worker"
fi
echo "ok: clean link $clean in $clean_s s; $delay: $lossy, every test loss bit for bit the same, in $lossy_s s" \
     "(${dropped:-?} packets dropped at the server); $partition s partition: $outcome, all done $(seconds_since "$start") s after the start"
