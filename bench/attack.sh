#!/usr/bin/env bash
# Training beside an attacker: a standalone rdmaps-train server and WORKERS
# worker processes on this host, while bench/attacker.py holds silent and
# half-open connections to the server's port and opens garbage connections
# without the secret all along ("attacked"), runs the same attack against a
# decoy listener ("decoy": what the attack costs this host's cores with no
# rdmaps in its way, the bound), or is not running ("quiet"); interleaved REPS
# times. Prints each run's wall time, final accuracy and the server's longest
# set-up pause, and the median ratios attacked / decoy and attacked / quiet
# (docs/benchmarks.md "Security").
#
#   bench/attack.sh [BUILD_DIR] [REPS] [WORKERS] [extra rdmaps-train flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
# Seconds on the monotonic clock: the wall clock's steps (NTP) moved a run's length.
monotonic() { /usr/bin/python3 -c 'import time; print(time.monotonic())'; }
build=${1:-build}
reps=${2:-3}
workers=${3:-2}
shift $(( $# < 3 ? $# : 3 )) || true
extra=("$@")
train="$build/src/rdmaps-train"
out=${OUT:-attack-out}
mkdir -p "$out"
secret=$(mktemp)
chmod 600 "$secret"
/usr/bin/python3 -c 'import secrets; print(secrets.token_hex(32))' >"$secret"
export RDMAPS_SECRET_FILE=$secret
# What this script started and has not reaped yet: stopped however it ends.
server=""; attacker=""; pids=()
cleanup() {
  for p in "${pids[@]}" $attacker $server; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" $attacker $server; do wait "$p" 2>/dev/null || true; done
  rm -f "$secret"
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
echo "| rep | mode | seconds | final acc | longest set-up pause (ms) |"
echo "|---:|---|---:|---:|---:|"
: >"$out/runs.txt"
for rep in $(seq 1 "$reps"); do
  for mode in quiet decoy attacked; do
    port=$(free_port)
    log="$out/$mode-$rep"
    "$train" --role server --listen "127.0.0.1:$port" --workers "$workers" "${extra[@]}" 2>"$log.server" &
    server=$!
    sleep 0.5
    attacker=""
    if [ "$mode" != quiet ]; then
      target="127.0.0.1:$port"
      [ "$mode" = attacked ] || target=decoy
      /usr/bin/python3 bench/attacker.py "$target" 200 2>"$log.attacker" &
      attacker=$!
      sleep 1
    fi
    start=$(monotonic)
    pids=()
    for w in $(seq 0 $((workers - 1))); do
      "$train" --role worker --worker "$w" --workers "$workers" --servers-list "127.0.0.1:$port" "${extra[@]}" \
        >"$log.worker$w" 2>&1 &
      pids+=($!)
    done
    for w in "${!pids[@]}"; do
      p=${pids[w]}; unset 'pids[w]'
      wait "$p" || { echo "attack.sh: worker $w failed (exit $?), $mode rep $rep (see $log.worker$w):" >&2
                     tail -n 3 "$log.worker$w" >&2; exit 1; }
    done
    end=$(monotonic)
    [ -z "$attacker" ] || { kill "$attacker"; wait "$attacker" || true; attacker=""; }
    p=$server; server=""
    wait "$p" || { echo "attack.sh: server failed (exit $?), $mode rep $rep (see $log.server):" >&2
                   tail -n 3 "$log.server" >&2; exit 1; }
    seconds=$(echo "$end - $start" | bc)
    acc=$(grep -o 'eval 0 [^ ]* [^ ]*' "$log.worker0" | tail -1 | awk '{print $4}')
    pause=$(grep -o 'longest set-up pause [0-9.]*' "$log.server" | tail -1 | awk '{print $4}')
    printf '| %s | %s | %.2f | %s | %s |\n' "$rep" "$mode" "$seconds" "${acc:-?}" "${pause:-?}"
    echo "$mode $seconds $pause" >>"$out/runs.txt"
  done
done
/usr/bin/python3 - "$out/runs.txt" <<'PY'
import statistics, sys
runs = [l.split() for l in open(sys.argv[1])]
times = {m: [float(r[1]) for r in runs if r[0] == m] for m in ("quiet", "decoy", "attacked")}
pauses = [float(r[2]) for r in runs if r[0] == "attacked"]
for name, base in (("decoy", times["decoy"]), ("quiet", times["quiet"])):
    ratios = [h / b for b, h in zip(base, times["attacked"])]
    print(f"median attacked / {name} wall time: {statistics.median(ratios):.2f} (per rep: "
          + ", ".join(f"{r:.2f}" for r in ratios) + ")")
print(f"longest set-up pause of an attacked server: {max(pauses):.1f} ms")
PY
