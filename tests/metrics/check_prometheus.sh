#!/bin/bash
# A real Prometheus (Debian's /usr/bin/prometheus) scrapes a training job:
# rdmaps-server --metrics with --keep-running and two rdmaps-train workers,
# each with its own --metrics. Once the workers are done, the counters
# Prometheus stored must equal the server's own: a direct GET of /metrics and
# the "done:" line the server prints when stopped. The staleness histogram's
# buckets must be cumulative and end at its count. Also: 404 for another
# path, and --metrics errors that name the flag and the address.
# usage: check_prometheus.sh RDMAPS_SERVER RDMAPS_TRAIN OUT_DIR
set -euo pipefail
server_bin=$1 train=$2 out=$3
prometheus=/usr/bin/prometheus
if [ ! -x "$prometheus" ]; then
  echo "FAIL: $prometheus is missing: install the Debian package prometheus (scripts/install-deps.sh)"
  exit 1
fi
rm -rf "$out"
mkdir -p "$out/tsdb"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$out"/*.log; do echo "== $f"; tail -n 8 "$f"; done; exit 1; }
free_port() { "$(dirname "$0")/../common/free_ports.py" "$@"; }  # [N]: the first of N in a row
until_ok() {  # until_ok SECONDS COMMAND...: retries every 0.2 s
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.2; done
}
# One value of the instant query $1 at Prometheus ("" while it has none).
query() {
  curl -sf --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" |
    /usr/bin/python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
is() { test "$(query "$1")" = "$2"; }  # is QUERY VALUE (a command, for until_ok)
# The value of the unlabelled sample or sum over labels of metric $1 in a /metrics text on stdin.
sum_of() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%.0f\n", s }'; }

# Bad input first: each names the flag and the address.
if "$server_bin" --listen 127.0.0.1:0 --metrics nohost >"$out/bad.log" 2>&1; then fail "--metrics nohost was accepted"; fi
grep -q -- "--metrics: address 'nohost' has no port" "$out/bad.log" || fail "the error for --metrics nohost does not name it: $(cat "$out/bad.log")"

metrics_port=$(free_port) prom_port=$(free_port) w0_port=$(free_port) w1_port=$(free_port)
"$server_bin" --listen 127.0.0.1:0 --metrics "127.0.0.1:$metrics_port" --workers 2 --keep-running --rule-from-workers \
  --stats-interval 0 --transport tcp 2>"$out/server.log" &
server=$!
pids+=($server)
until_ok 20 grep -q "listening on" "$out/server.log" || fail "the server did not start"
port=$(sed -n 's/.* listening on [^ ]*:\([0-9]*\) .*/\1/p' "$out/server.log")
until_ok 10 curl -sf -o /dev/null "http://127.0.0.1:$metrics_port/metrics" || fail "no /metrics at $metrics_port"

if "$server_bin" --listen 127.0.0.1:0 --metrics "127.0.0.1:$metrics_port" >"$out/in-use.log" 2>&1; then
  fail "a second server took metrics port $metrics_port"
fi
grep -q -- "--metrics 127.0.0.1:$metrics_port: cannot listen there: the port is in use" "$out/in-use.log" ||
  fail "the error for a port in use does not say so: $(cat "$out/in-use.log")"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$metrics_port/nope")" = 404 ] || fail "/nope is not 404"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://127.0.0.1:$metrics_port/metrics")" = 405 ] ||
  fail "DELETE /metrics is not 405"
head -c 1000000 /dev/zero >"$out/body"
[ "$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$out/body" "http://127.0.0.1:$metrics_port/metrics")" = 413 ] ||
  fail "a 1 MB body to /metrics is not refused with 413"
type=$(curl -sf -o /dev/null -w '%{content_type}' "http://127.0.0.1:$metrics_port/metrics")
[ "$type" = "text/plain; version=0.0.4; charset=utf-8" ] || fail "content type '$type'"

cat >"$out/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: rdmaps-server
    static_configs:
      - targets: ['127.0.0.1:$metrics_port']
  - job_name: rdmaps-worker
    static_configs:
      - targets: ['127.0.0.1:$w0_port', '127.0.0.1:$w1_port']
YML
"$prometheus" --config.file="$out/prometheus.yml" --storage.tsdb.path="$out/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$out/prometheus.log" 2>&1 &
pids+=($!)
until_ok 30 curl -sf -o /dev/null "http://127.0.0.1:$prom_port/-/ready" || fail "Prometheus did not become ready"
# Its discovery hands targets to the scrapers after up to 5 s: train once it scrapes.
until_ok 30 is 'up{job="rdmaps-server"}' 1 || fail "Prometheus does not scrape the server: $(curl -s "http://127.0.0.1:$prom_port/api/v1/targets")"

job=(--workers 2 --servers-list "127.0.0.1:$port" --epochs 4 --train-limit 12000 --test-limit 500 --transport tcp
     --data /usr/share/datasets/fashion-mnist)
wpids=()
for w in 0 1; do
  port_var=w${w}_port
  "$train" --role worker --worker $w "${job[@]}" --metrics "127.0.0.1:${!port_var}" >"$out/w$w.out" 2>"$out/w$w.log" &
  wpids+=($!)
  pids+=($!)
done
start=$SECONDS
for p in "${wpids[@]}"; do wait "$p" || fail "a worker failed"; done
echo "the workers trained for $((SECONDS - start)) s"
# Each says where its metrics are (a worker given port 0 had no way to learn it).
for w in 0 1; do
  port_var=w${w}_port
  grep -q "rdmaps-train worker $w: metrics at http://127.0.0.1:${!port_var}/metrics" "$out/w$w.log" ||
    fail "worker $w did not say where its metrics are"
done
# While they trained, Prometheus scraped them too (their endpoints went with them).
[ "$(query 'count(max_over_time(rdmaps_worker_pushes_total[5m]) > 0)')" = 2 ] ||
  fail "Prometheus has no rdmaps_worker_pushes_total of both workers: $(curl -s --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=max_over_time(up[5m])")"

# The server's final values: a direct scrape once both workers said goodbye.
final() { curl -sf "http://127.0.0.1:$metrics_port/metrics"; }
both_left() { test "$(final | sum_of rdmaps_workers_left_total)" = 2; }
until_ok 10 both_left || fail "the server did not see both workers leave"
final >"$out/final.metrics"
pushes=$(sum_of rdmaps_pushes_total <"$out/final.metrics")
bytes=$(sum_of rdmaps_push_bytes_total <"$out/final.metrics")
count=$(sum_of rdmaps_staleness_count <"$out/final.metrics")
[ "$pushes" -gt 0 ] && [ "$count" = "$pushes" ] || fail "pushes $pushes, staleness count $count"

# Prometheus has them once it scraped after the end.
until_ok 20 is 'sum(rdmaps_pushes_total{job="rdmaps-server"})' "$pushes" ||
  fail "Prometheus has $(query 'sum(rdmaps_pushes_total{job="rdmaps-server"})') pushes, the server $pushes"
got_bytes=$(query 'sum(rdmaps_push_bytes_total{job="rdmaps-server"})')
got_count=$(query 'rdmaps_staleness_count{job="rdmaps-server"}')
[ "$got_bytes" = "$bytes" ] || fail "Prometheus has $got_bytes bytes, the server $bytes"
[ "$got_count" = "$count" ] || fail "Prometheus has staleness count $got_count, the server $count"
curl -sf --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode 'query=rdmaps_staleness_bucket' |
  /usr/bin/python3 -c '
import json, sys
count = int(sys.argv[1])
buckets = sorted((float(r["metric"]["le"]), int(r["value"][1])) for r in json.load(sys.stdin)["data"]["result"])
values = [v for _, v in buckets]
assert len(buckets) > 2 and buckets[-1][0] == float("inf"), buckets
assert values == sorted(values), "buckets are not cumulative: %s" % buckets
assert values[-1] == count, "+Inf bucket %d, count %d" % (values[-1], count)
print("staleness buckets:", " ".join("%g:%d" % b for b in buckets))
' "$count" || fail "the staleness histogram at Prometheus is wrong"

# And the server's own last word agrees.
kill -TERM "$server"
wait "$server" || fail "the server did not exit cleanly on SIGTERM"
done_pushes=$(sed -n 's/.*rdmaps-server: done: \([0-9]*\) pushes.*/\1/p' "$out/server.log")
[ "$done_pushes" = "$pushes" ] || fail "the server's done line says $done_pushes pushes, Prometheus $pushes"
echo "ok: Prometheus scraped $pushes pushes, $bytes bytes, staleness count $count, as the server counted them"
