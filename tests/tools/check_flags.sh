#!/usr/bin/env bash
# Every program parses its command line the same way (CLI11, src/api/cli.h): a
# bad flag, a bad value or a bad RDMAPS_* variable ends it before it starts
# anything, with a non-zero exit and a message naming the flag or the
# variable; --help exits 0 and lists the variables.
#   tests/tools/check_flags.sh RDMAPS_SERVER RDMAPS_TRAIN [RDMAPS_PERF]
set -uo pipefail
server=$1 train=$2 perf=${3:-}
failures=0
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }

# refused TEXT COMMAND...: COMMAND exits non-zero saying TEXT. A bad flag
# taken for a good one would start a server or a training; the timeout ends it.
refused() {
  local want=$1; shift
  local out status
  out=$(timeout -k 5 30 "$@" 2>&1 </dev/null); status=$?
  if [ $status -eq 0 ]; then fail "accepted: $*"; return; fi
  case $status in
    124 | 137) fail "still running after 30 s, so accepted: $*"; return ;;
    126 | 127) fail "could not run (exit $status): $*: $out"; return ;;
  esac
  if ! grep -qF -- "$want" <<<"$out"; then fail "refused without naming '$want' (exit $status): $*: $out"; return; fi
  echo "ok: $* -> $(grep -F -- "$want" <<<"$out" | head -1)"
}

# serves TEXT COMMAND...: COMMAND says TEXT and is still running a second
# later. Waited for, up to 30 s: a fixed 3 s was a start plus a second
# report on a loaded machine.
serves() {
  local want=$1; shift
  local log pid said=0 status=0 out
  log=$(mktemp)
  "$@" >"$log" 2>&1 </dev/null &
  pid=$!
  for _ in $(seq 300); do
    if grep -qF -- "$want" "$log"; then said=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ $said = 1 ] && sleep 1
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  else
    wait "$pid"; status=$?
    said=2  # exited
  fi
  out=$(cat "$log"); rm -f "$log"
  if [ $said = 2 ]; then fail "did not keep serving (exit $status): $*: $out"; return; fi
  if [ $said = 0 ]; then fail "served 30 s without saying '$want': $*: $out"; return; fi
  echo "ok: $* -> serves"
}

# helps COMMAND... [-- TEXT]: COMMAND --help exits 0 and prints TEXT.
helps() {
  local want=Usage args=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do args+=("$1"); shift; done
  [ $# -gt 1 ] && want=$2
  local out status
  out=$(timeout -k 5 30 "${args[@]}" --help 2>&1 </dev/null); status=$?
  if [ $status -ne 0 ]; then fail "${args[*]} --help exited $status: $out"; return; fi
  if ! grep -qF -- "$want" <<<"$out"; then fail "${args[*]} --help does not list $want"; return; fi
  echo "ok: ${args[*]} --help lists $want"
}

# defaults GROUP COMMAND...: every flag that takes a value in GROUP of
# COMMAND --help shows its default (TYPE=DEFAULT; a switch [on|off]=off), as
# docs/cluster.md says; only those whose default is no value at all have none.
no_default=" --secret-file --checkpoint-dir --metrics --straggler --label "
defaults() {
  local group=$1; shift
  local out missing
  out=$(timeout -k 5 30 "$@" --help 2>&1 </dev/null)
  missing=$(awk -v group="$group" -v skip="$no_default" '
    /^[^ ]/ { in_group = index($0, group) == 1 }
    in_group && /^  --[a-z0-9-]+ [^ ]/ && $2 !~ /=/ && index(skip, " " $1 " ") == 0 { print $1 }' <<<"$out")
  if ! grep -qF -- "$group" <<<"$out"; then fail "$* --help has no group $group"; return; fi
  if [ -n "$missing" ]; then fail "$* --help shows no default for" $missing; return; fi
  echo "ok: $* --help shows the default of every flag of $group"
}
config_group="Parameter-server configuration"

echo "== rdmaps-server"
s=("$server" --listen 127.0.0.1:0)
refused "--workers: '4294967297'" "${s[@]}" --workers 4294967297
refused "--workers: '0'" "${s[@]}" --workers 0
refused "--servers: '0'" "${s[@]}" --servers 0
refused "--servers: '4097' is not a whole number from 1 to 4096" "${s[@]}" --servers 4097  # kMaxServers
refused "--stats-interval: '86401'" "${s[@]}" --stats-interval 86401
# Seconds take fractions as everywhere else (they were whole here only); under a millisecond is refused, not 0 (off).
serves "in the last 0.5 s" "${s[@]}" --stats-interval 0.5 --stall-warning 2.5
refused "--stall-warning: '0.0001' is not 0 (off) or a number of seconds from 0.001 to 86400" "${s[@]}" --stall-warning 0.0001
refused "--launch-timeout: '0' is not a number of seconds from 0.001 to 86400" "${s[@]}" --launch-timeout 0
# A launch's setting outside a launch was taken and ignored.
refused "--launch-timeout: bounds the address exchange of a launched job" "${s[@]}" --launch-timeout 5
refused "--lr: '-0.5'" "${s[@]}" --lr -0.5
refused "--lambda: '-5'" "${s[@]}" --lambda -5
refused "unknown flag --floats" "${s[@]}" --floats 0
refused "unknown flag --no-such-flag" "${s[@]}" --no-such-flag
refused "flag --lr needs a value" "${s[@]}" --lr
refused "--rule: 'fast'" "${s[@]}" --rule=fast
refused "--check-nan: 'maybe' is not on or off" "${s[@]}" --check-nan maybe
# An empty value (an unset shell variable) was taken for the switch alone or
# ignored: --resume "" served a fresh model without asking for --checkpoint-dir.
refused "--check-nan: '' is not on or off" "${s[@]}" --check-nan ""
refused "--resume: '' is not on or off" "${s[@]}" --resume ""
refused "--resume: '' is not on or off" "${s[@]}" --resume=
# An address is checked where it is read, so the message names the flag or
# the variable it came from (it named neither, or --metrics for RDMAPS_METRICS).
refused "RDMAPS_LISTEN: address '127.0.0.1:70000': port '70000' is not a number" env RDMAPS_LISTEN=127.0.0.1:70000 "$server"
refused "--listen: address 'badaddr' has no port" "$server" --listen badaddr
refused "RDMAPS_METRICS: address '127.0.0.1:99999'" env RDMAPS_METRICS=127.0.0.1:99999 "${s[@]}"
refused "--metrics: '' is not an address" "${s[@]}" --metrics ""
# A metrics port found in use when the server binds it: named as it was given.
coproc busy { exec python3 -c 'import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(120)'; }
read -r busy_port <&"${busy[0]}"
refused "RDMAPS_METRICS 127.0.0.1:$busy_port: cannot listen there: the port is in use" \
  env RDMAPS_METRICS="127.0.0.1:$busy_port" "${s[@]}"
refused "--metrics 127.0.0.1:$busy_port: cannot listen there" "${s[@]}" --metrics "127.0.0.1:$busy_port"
# shellcheck disable=SC2154  # coproc sets busy_PID
kill "$busy_PID" 2>/dev/null
refused "RDMAPS_WORKERS: '4294967297'" env RDMAPS_WORKERS=4294967297 "${s[@]}"
# A variable set to "" was taken for one not set: RDMAPS_LISTEN= served on
# 0.0.0.0:13337, RDMAPS_METRICS= turned metrics off.
refused "RDMAPS_LISTEN is set but empty: give it a value for --listen, or unset it" env RDMAPS_LISTEN= "$server"
refused "RDMAPS_METRICS is set but empty" env RDMAPS_METRICS= "${s[@]}"
helps env RDMAPS_METRICS= "$server"  # --help still helps
# A bad value's error says "see --help", which failed on that value too.
helps env RDMAPS_SHARD_FLOATS=0 RDMAPS_LR=x "$server"
helps env RDMAPS_SHARD_FLOATS=0 RDMAPS_WORKERS=-1 "$train"
if out=$(env RDMAPS_SHARD_FLOATS=0 "$server" --version 2>&1) && grep -qE '^[0-9]+\.[0-9]+' <<<"$out"; then
  echo "ok: --version with a bad variable prints $out"
else
  fail "--version with RDMAPS_SHARD_FLOATS=0 gave: $out"
fi
# strtod's hex floats and leading spaces: --lr 0x10 served with lr 16.
refused "--lr: '0x10' is not a number" "${s[@]}" --lr 0x10
refused "RDMAPS_LR: '0x10' is not a number" env RDMAPS_LR=0x10 "${s[@]}"
refused "--lr: ' 0.1' is not a number" "${s[@]}" --lr " 0.1"
refused "--reconnect: '0x10' is not a duration" "$train" --data /nonexistent --out /nonexistent --reconnect 0x10
# Under a millisecond was 0, which means off (UCX's own 20 s for --peer-timeout, no reconnect).
refused "--peer-timeout: '0.5ms' is not a duration (SEC, SECs or MSms; 0, or at least 1 ms)" "${s[@]}" --peer-timeout 0.5ms
refused "--reconnect: '0.0004' is not a duration" "$train" --data /nonexistent --out /nonexistent --reconnect 0.0004
# Nor is a value strtod takes to 0: 1e-400 meant off.
refused "--peer-timeout: '1e-400' is not a duration" "${s[@]}" --peer-timeout 1e-400
# A worker's settings, taken by the server, did nothing (and its config line showed them).
refused "--reconnect: a worker's setting, not a server's" "${s[@]}" --reconnect 30s
refused "--skip-pulls: a worker's setting, not a server's" "${s[@]}" --skip-pulls
# A setting that does nothing without another is refused, as --checkpoint-every without a directory.
# Help that never reached standard output exited 0, as rdmaps-perf's did.
# shellcheck disable=SC2016  # $0 is sh's
refused "rdmaps-server: error: its output did not reach standard output" sh -c '"$0" --help >/dev/full' "$server"
# shellcheck disable=SC2016  # $0 is sh's
refused "rdmaps-train: error: its output did not reach standard output" sh -c '"$0" --version >/dev/full' "$train"
refused "--tau-max 5 does nothing without --staleness-policy drop: give both, or neither" "${s[@]}" --tau-max 5
# A rule's parameter under another rule was dropped without a word; its variable is not judged (one
# environment may serve jobs of several rules).
refused "--momentum 0.5 does nothing with rule sgd: it is rule momentum's" "${s[@]}" --momentum 0.5
refused "--lambda0 3 does nothing with rule momentum: it is rule dc-asgd-a's" "${s[@]}" --rule momentum --lambda0 3
serves "lambda0 3" "${s[@]}" --rule dc-asgd-a --lambda0 3
serves "rule sgd" env RDMAPS_MOMENTUM=0.5 "${s[@]}"
# An unset $DIR: the server made a directory "--resume" and started without resuming.
refused "--checkpoint-dir needs a value, and '--resume' is a flag" "${s[@]}" --checkpoint-dir --resume
refused "RDMAPS_TAU_MAX 5 does nothing without" env RDMAPS_TAU_MAX=5 "${s[@]}" --staleness-policy eta-tau
serves "drop (tau-max 5)" "${s[@]}" --staleness-policy drop --tau-max 5
# The first worker's rule is adopted: a rule typed beside it was dropped without a word.
refused "--lr: --rule-from-workers takes the update rule and its parameters from the first worker" \
  "${s[@]}" --rule-from-workers --lr 0.5
refused "--rule: --rule-from-workers takes" "${s[@]}" --rule momentum --rule-from-workers
refused "--staging-depth: a worker's setting, not a server's" "${s[@]}" --staging-depth 4
refused "--gpu-path: a worker's setting, not a server's" "${s[@]}" --gpu-path staged
# Nor does its config line show them (skip-pulls showed "off" under an SSP bound).
banner_of() {  # rdmaps-server's "config: " line with these flags
  local log
  log=$(mktemp)
  "${s[@]}" "$@" >"$log" 2>&1 </dev/null &
  for _ in $(seq 300); do grep -q "^config: " "$log" && break; kill -0 $! 2>/dev/null || break; sleep 0.1; done
  kill $! 2>/dev/null; wait $! 2>/dev/null
  # No config line: what the server said instead, for the failure's message.
  grep "^config: " "$log" || tail -n 3 "$log"
  rm -f "$log"
}
banner=$(banner_of --staleness 3)
if grep -q "^config: staleness 3," <<<"$banner" && ! grep -q "skip-pulls" <<<"$banner"; then
  echo "ok: the server's config line shows no worker's setting"
else
  fail "the server's config line with --staleness 3: '$banner'"
fi
# What the first worker sets is named so: the line showed a bound and a rule it would not use.
banner=$(banner_of --rule-from-workers)
if grep -q "^config: staleness from the first worker, rule from the first worker, staleness-policy " <<<"$banner"; then
  echo "ok: the server's config line names what its first worker sets"
else
  fail "the server's config line with --rule-from-workers and no --staleness: '$banner'"
fi
ckpt=$(mktemp -d)
banner=$(banner_of --rule-from-workers --checkpoint-dir "$ckpt" --resume)
rm -rf "$ckpt"
if grep -q "^config: staleness from the resumed checkpoint, else the first worker, rule from the resumed checkpoint, else" \
  <<<"$banner"; then
  echo "ok: with --resume, the config line names the checkpoint first"
else
  fail "the server's config line with --resume: '$banner'"
fi
# The index and count are named as given: from a variable, the message named the flags.
refused "server index RDMAPS_SERVER_INDEX=3 is not below the number of servers --servers 2" \
  env RDMAPS_SERVER_INDEX=3 "${s[@]}" --servers 2
refused "server index --index 3 is not below the number of servers RDMAPS_NUM_SERVERS=2" \
  env RDMAPS_NUM_SERVERS=2 "${s[@]}" --index 3
refused "RDMAPS_LR: '-0.5'" env RDMAPS_LR=-0.5 "${s[@]}"
# Numbers past their field: refused at once, not wrapped, saturated, thrown
# from a later conversion (an abort) or allocated for.
refused "--workers: '100000000' is not a whole number from 1 to 4096" "${s[@]}" --workers 100000000
refused "--staleness: '99999999999999999999' is too large" "${s[@]}" --staleness 99999999999999999999
refused "--max-bytes: '18446744073709551616' is too large" "${s[@]}" --max-bytes 18446744073709551616
refused "--checkpoint-every: '99999999999999999999u'" "${s[@]}" --checkpoint-every 99999999999999999999u
refused "--dc-bound: '1e39' is out of range" "${s[@]}" --dc-bound 1e39
refused "--lr: '1e-50' is out of range" "${s[@]}" --lr 1e-50
refused "RDMAPS_DC_TAU0: '1e40' is out of range" env RDMAPS_DC_TAU0=1e40 "${s[@]}"
refused "--checkpoint-every requires --checkpoint-dir" "${s[@]}" --checkpoint-every 10s
refused "RDMAPS_CHECKPOINT_KEEP requires --checkpoint-dir" env RDMAPS_CHECKPOINT_KEEP=3 "${s[@]}"
# RDMAPS_SERVERS is the address list (workers, launches exporting it to every
# rank): rdmaps-server's count is RDMAPS_NUM_SERVERS, so the list reaches the
# flag checked after it instead of failing as "not a whole number".
refused "--workers: '0'" env RDMAPS_SERVERS=127.0.0.1:13400,127.0.0.1:13401 "${s[@]}" --workers 0
refused "RDMAPS_NUM_SERVERS: 'two'" env RDMAPS_NUM_SERVERS=two "${s[@]}"
# A launched server (rank 0 of 2 here) checks its launch before it listens;
# before, each of these served where no worker of the launch could find it.
launched=(env RDMAPS_RANK=0 RDMAPS_WORLD_SIZE=2 RDMAPS_SECRET=0123456789abcdef0123456789abcdef)
refused "RDMAPS_SERVERS entry 1 '127.0.0.1:0' has port 0" "${launched[@]}" RDMAPS_SERVERS=127.0.0.1:0 "$server"
refused "--listen 127.0.0.1:0 listens on another port than this server's RDMAPS_SERVERS entry 1 '127.0.0.1:13400'" \
  "${launched[@]}" RDMAPS_SERVERS=127.0.0.1:13400 "${s[@]}"
refused "RDMAPS_RANK=5 is not below RDMAPS_WORLD_SIZE=1" env RDMAPS_RANK=5 RDMAPS_WORLD_SIZE=1 "${s[@]}"
# An index or address from its variable is the user's as the flag is: a job
# script's RDMAPS_SERVER_INDEX=$SLURM_PROCID over a step of servers alone was
# taken for a launch (and refused as one without workers), and an exported
# RDMAPS_LISTEN was replaced by the launch's address without a word.
serves "rdmaps-server 1/2 listening on 127.0.0.1:" "${launched[@]}" RDMAPS_SERVER_INDEX=1 "${s[@]}" --servers 2 --workers 1
refused "RDMAPS_LISTEN 127.0.0.1:0 listens on another port than this server's RDMAPS_SERVERS entry 1 '127.0.0.1:13400'" \
  "${launched[@]}" RDMAPS_SERVERS=127.0.0.1:13400 RDMAPS_LISTEN=127.0.0.1:0 "$server"
# A launched server without a secret gives rdmaps-train's advice for a launch
# (docs/cluster.md), not a lone server's "listen on 127.0.0.1".
no_secret=(env -u RDMAPS_SECRET -u RDMAPS_SECRET_FILE RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29517)
launched_needs="a launched job serves on every address, so its ranks need a shared secret: export RDMAPS_SECRET"
refused "$launched_needs" "${no_secret[@]}" "$server"
refused "$launched_needs" "${no_secret[@]}" "$train" --data /nonexistent --out /nonexistent
# Switches take on|off as every switch does (docs/cluster.md "Flags and
# variables"): the value is parsed, so the run reaches the index check after
# it; "unexpected argument off" was the error before.
for switch in "--keep-running off" "--rule-from-workers off" "--gpu-shard off" "--insecure on" "--insecure=off"; do
  # shellcheck disable=SC2086  # the switch and its value are two words
  refused "server index --index 3 is not below the number of servers --servers 2" "${s[@]}" --index 3 --servers 2 $switch
done
helps "$server" -- "(Env:RDMAPS_NUM_SERVERS)"
defaults "$config_group" "$server"
defaults "Server:" "$server"
helps "$server" -- "(Env:RDMAPS_WORKERS)"
helps "$server" -- "(Env:RDMAPS_SHARD_FLOATS)"
# The footer's launch with PyTorch workers: their optimizer sets the rule, which
# a server refuses unless it adopts the workers' (docs/cluster.md, docs/pytorch.md).
helps "$server" -- "rdmaps-server --servers 2 --rule-from-workers :"

# A command line's error exits 2, a run that failed 1 (both were 1).
exit_status() {  # want COMMAND...
  local want=$1 status; shift
  timeout -k 5 30 "$@" >/dev/null 2>&1 </dev/null; status=$?
  if [ "$status" = "$want" ]; then echo "ok: exit $status: $*"; else fail "exit $status, not $want: $*"; fi
}
exit_status 2 "${s[@]}" --bogus
exit_status 2 "${s[@]}" --momentum 0.5
exit_status 1 "${s[@]}" --checkpoint-dir /proc/rdmaps-none

echo "== rdmaps-train"
exit_status 2 "$train" --bogus
exit_status 2 "$train" --batch 100000
exit_status 1 "$train" --data /nonexistent
t=("$train" --data /nonexistent --out /nonexistent)
refused "--workers: 4294967297" "${t[@]}" --workers 4294967297
refused "301 is more than 256 (use --virtual-workers" "${t[@]}" --workers 300
refused "--launch-timeout: bounds the address exchange of a launched job" "${t[@]}" --launch-timeout 5
# A check after parsing names the variable the value came from (it named the flag, never typed).
refused "RDMAPS_SKIP_PULLS: is not played by the --virtual-workers schedule" env RDMAPS_SKIP_PULLS=on "${t[@]}" --virtual-workers 2
refused "--checkpoint-dir: --compare runs six variants one after another" "${t[@]}" --compare --checkpoint-dir /tmp
# Servers are processes whatever the workers are: --virtual-workers started 4096.
refused "--servers: a local run starts a process per server, and one for the virtual workers; 4097 is more than 256" \
  "${t[@]}" --virtual-workers 2 --servers 4096
refused "--servers: a local run starts a process per server and worker; 302 is more than 256" "${t[@]}" --workers 2 --servers 300
refused "--workers: '0'" "${t[@]}" --workers 0
refused "--lambda 0.5 does nothing with rule dc-asgd-a: it is rule dc-asgd-c's" "${t[@]}" --lambda 0.5
refused "--lambda0 5 does nothing with rule sgd: it is rule dc-asgd-a's" "${t[@]}" --dc off --lambda0 5
refused "--role: virtual runs the N workers --virtual-workers N names: give it" "${t[@]}" --role virtual \
  --servers-list 127.0.0.1:5000
# A check the parse itself runs named the flag where the variable gave the value.
refused "RDMAPS_TAU_MAX 3 does nothing without --staleness-policy drop" env RDMAPS_TAU_MAX=3 "${t[@]}"
# A flag that needs a value took the next flag for it: --out --json wrote ./--json.
refused "--out needs a value, and '--json' is a flag (to mean it as the value, write --out=--json)" \
  "$train" --data /nonexistent --out --json
# Its own flags have no variable: one set for rdmaps-server is said to be unread (it ran async silently).
refused "warning: RDMAPS_STALENESS=3 is not read: rdmaps-train takes --staleness on its command line only" \
  env RDMAPS_STALENESS=3 "${t[@]}"
refused "warning: RDMAPS_WORKERS=8 is not read: rdmaps-train takes --workers on its command line only" \
  env RDMAPS_WORKERS=8 "${t[@]}"
refused "--servers: '0'" "${t[@]}" --servers 0
# Read by a launched job only: outside one, a refusal named a --servers nobody gave.
refused "warning: RDMAPS_NUM_SERVERS=2 is not read outside a launched job" env RDMAPS_NUM_SERVERS=2 "${t[@]}"
# A hidden flag (set for the processes a program starts) was named "" in errors.
refused "--report-fd: '-1' is not a whole number" "${t[@]}" --report-fd -1
refused "--lr: '-0.5'" "${t[@]}" --lr -0.5
refused "--lambda: '-5'" "${t[@]}" --lambda -5
refused "--lambda0: '-1'" "${t[@]}" --lambda0=-1
refused "--shard-floats: '0'" "${t[@]}" --shard-floats 0
refused "unknown flag --floats" "${t[@]}" --floats 0
refused "unknown flag --no-such-flag" "${t[@]}" --no-such-flag 3
refused "flag --lr needs a value" "${t[@]}" --lr
refused "--straggler: 'random'" "${t[@]}" --straggler random
# A factor past a duration's range hung the run (1e12) or slowed nothing (1e300).
refused "--straggler: '0:1e12': FACTOR must be from 1 to 1000" "${t[@]}" --straggler 0:1e12
refused "--straggler: 'random:1e300': FACTOR must be from 1 to 1000" "${t[@]}" --straggler random:1e300
# A mean past 1e9 ticks was lost in rounding: less delay than geometric:4.
refused "--delay: 'geometric:1e18' needs a mean delay above 0 and at most 1e9" "${t[@]}" --virtual-workers 2 --delay geometric:1e18
refused "--json: '' is not on or off" "${t[@]}" --json ""
refused "--ms-bias-correction: '' is not on or off" "${t[@]}" --ms-bias-correction ""
refused "--metrics: '' is not an address" "${t[@]}" --metrics ""
refused "--listen: address '127.0.0.1:70000': port '70000'" "${t[@]}" --role server --index 0 --listen 127.0.0.1:70000
refused "--evals-per-epoch: '0'" "${t[@]}" --evals-per-epoch 0
# A mode flag's value did nothing: --staleness 3 --sync=off stayed SSP.
refused "--sync: takes no value ('--sync=off')" "${t[@]}" --staleness 3 --sync=off
refused "--async: takes no value ('--async=on')" "${t[@]}" --async=on
# Two modes that disagree: the last one counted, --sync --staleness 3 ran SSP(3).
refused "--staleness: '--staleness 3' disagrees with '--sync'" "${t[@]}" --sync --staleness 3
refused "--async: '--async' disagrees with '--staleness 0'" "${t[@]}" --staleness 0 --async
# One flag given twice keeps its last value, as every flag does: refused only for the missing data.
refused "/nonexistent" "${t[@]}" --staleness 3 --staleness 4 --sync --staleness 0
# Read as rdmaps-server reads it: the same messages, and async for inf.
refused "--staleness: '99999999999999999999' is too large" "${t[@]}" --staleness 99999999999999999999
refused "--staleness: 'x' is not a whole number, inf or async" "${t[@]}" --staleness x
refused "--seed: '99999999999999999999' is too large" "${t[@]}" --seed 99999999999999999999
refused "--virtual-workers: 99999999999999999999 is more than the 4096" "${t[@]}" --virtual-workers 99999999999999999999
refused "--lr: '1e39' is out of range" "${t[@]}" --lr 1e39
# A role's own flags without that role would be ignored without a word.
refused "--servers-list: only --role worker or virtual reads it" "${t[@]}" --servers-list 127.0.0.1:9
refused "--listen: only --role server reads it" "${t[@]}" --listen 127.0.0.1:9
refused "--worker: only --role worker reads it" "${t[@]}" --role server --worker 1
refused "--servers-list: names 1 servers, --servers says 2" "${t[@]}" --role worker --servers 2 --servers-list 127.0.0.1:9
# Split at commas, 'a:1,' was one server, yet it passed a comma count of 2.
refused "--servers-list='127.0.0.1:9,': entry 2 is empty" "${t[@]}" --role worker --servers 2 --servers-list 127.0.0.1:9,
refused "RDMAPS_SHARD_FLOATS: '0'" env RDMAPS_SHARD_FLOATS=0 "${t[@]}"
refused "RDMAPS_STALENESS_POLICY: 'never'" env RDMAPS_STALENESS_POLICY=never "${t[@]}"
# Each entry is an address, checked with the flags: a bad second one was
# never reported (the worker dialled the first), a bad first one unnamed.
refused "--servers-list entry 2 'nohost' is not host:port" "${t[@]}" --role worker --servers 2 --servers-list 127.0.0.1:9,nohost
# The same reader as RDMAPS_SERVERS and the C ABI's: one server named twice, or a port no server listens on.
refused "--servers-list: '127.0.0.1:9' is listed twice (entries 1 and 2)" "${t[@]}" --role worker --servers 2 --servers-list 127.0.0.1:9,127.0.0.1:9
refused "--servers-list entry 1 '127.0.0.1:0' has port 0" "${t[@]}" --role worker --servers-list 127.0.0.1:0
# A name that does not resolve, with the flags: it failed after the data loaded, naming neither flag nor entry.
refused "--servers-list: entry 2: address 'no-such-host.invalid:9': cannot resolve" "${t[@]}" --role worker --servers 2 --servers-list 127.0.0.1:9,no-such-host.invalid:9
refused "--straggler: '0:0x10': FACTOR is not a number" "${t[@]}" --straggler 0:0x10
refused "--delay: 'uniform:0x10' has no number after the colon" "${t[@]}" --virtual-workers 2 --delay uniform:0x10
refused "--delay: 'uniform:2e9' needs a whole largest delay from 1 to 1e9" "${t[@]}" --virtual-workers 2 --delay uniform:2e9
# A bad log level is said at the start (it was said with the first line
# logged, so a local run that logs nothing never said it); the run goes on.
refused "RDMAPS_LOG_LEVEL: 'loud' is not debug, info, warn, error or off; logging at info" \
  env RDMAPS_LOG_LEVEL=loud "${t[@]}"
# A run is named by its rule: these ran momentum or sgd labelled DC-ASGD.
refused "--rule: --compare runs its own rules" "${t[@]}" --compare --rule momentum
# ... and its own names and bounds: these were overridden without a word.
refused "--dc: --compare runs its own variants" "${t[@]}" --compare --dc constant
refused "--sync: --compare runs its own variants" "${t[@]}" --compare --sync
refused "--label: --compare runs its own variants" "${t[@]}" --compare --label mine
refused "--rule: sgd disagrees with --dc constant (rule dc-asgd-c)" "${t[@]}" --rule sgd --dc constant
# The summary is JSON: a label that is not UTF-8 aborted the run after training, losing it.
refused "--label: the label is not UTF-8 at byte 3" "${t[@]}" --label $'bad\xffname'
# Overlong and surrogate forms, which the JSON writer refuses too.
refused "--label: the label is not UTF-8 at byte 1" "${t[@]}" --label $'x\xc0\xaf'
refused "--label: the label is not UTF-8 at byte 0" "${t[@]}" --label $'\xed\xa0\x80'
# A leading zero is decimal, in a flag and in its variable: CLI11 read 010 as octal 8 (--index 9 of 8
# servers is refused) and 08 "could not convert".
serves "rdmaps-server 9/10 listening on 127.0.0.1:" "$server" --servers 010 --index 9 --listen 127.0.0.1:0
serves "for 8 worker(s)" env RDMAPS_WORKERS=08 "$server" --listen 127.0.0.1:0
refused "--straggler: worker 10 does not exist (the job has 10 workers)" "${t[@]}" --workers 010 --straggler 10:2
refused "--straggler: worker 10 does not exist (the job has 10 workers)" "${t[@]}" --virtual-workers 010 \
  --straggler 10:2
# "--json off" asks for no summary: a role takes it.
serves "rdmaps-train server 0/1 on 127.0.0.1:" "$train" --role server --index 0 --listen 127.0.0.1:0 --json off
# A local run's summary flags, where no summary is written: ignored without a word.
refused "--label: only a local run writes a summary; --role server reads no such flag" \
  "$train" --role server --index 0 --listen 127.0.0.1:0 --label mine
refused "--compare: only a local run writes a summary; a launched job's ranks read no such flag" \
  env RDMAPS_RANK=1 RDMAPS_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29518 \
  RDMAPS_SECRET=0123456789abcdef0123456789abcdef "$train" --compare
# The server role's advice names --insecure, so it has one; other roles do not.
refused "--insecure: only --role server reads it" "${t[@]}" --insecure
refused "refusing to serve on 0.0.0.0:0 without a shared secret" env -u RDMAPS_SECRET -u RDMAPS_SECRET_FILE \
  "$train" --role server --index 0 --listen 0.0.0.0:0 --insecure off
serves "rdmaps-train server 0/1 on 0.0.0.0:" env -u RDMAPS_SECRET -u RDMAPS_SECRET_FILE \
  "$train" --role server --index 0 --listen 0.0.0.0:0 --insecure
# A batch larger than a worker's share of the data is refused before
# anything is sized from it (--batch 4294967295 aborted on bad_alloc). Real data.
refused "less than one batch of 4294967295" "$train" --out "$(mktemp -d)" --workers 1 --batch 4294967295
# Worker processes that cannot all hold the dataset (220 MB each) are refused
# before any starts (the kernel killed them one by one, mid-run), where this
# machine has less memory than 250 of them need; a larger one skips the check.
if [ "$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)" -lt $((250 * 225 * 1024)) ]; then
  refused "--workers: 250 worker processes each load the dataset" "$train" --out "$(mktemp -d)" --workers 250
fi
# ... and before any process starts: --compare trained its sequential run first, then threw it away.
refused "--workers: 4 workers of 200 training examples get 50 each, less than one batch of 64" \
  "$train" --out "$(mktemp -d)" --compare --workers 4 --train-limit 200 --epochs 1
# Data whose headers pass the driver's check but whose labels stop short: the
# worker names the file as it loads it, and the run ends with that error's
# kind (it ended as "error (peer-gone)", the kind of a peer's failure).
cut=$(mktemp -d)
fm=/usr/share/datasets/fashion-mnist
ln -s "$fm/train-images-idx3-ubyte.gz" "$fm/t10k-images-idx3-ubyte.gz" "$fm/t10k-labels-idx1-ubyte.gz" "$cut/"
gunzip -c "$fm/train-labels-idx1-ubyte.gz" | head -c 30000 | gzip >"$cut/train-labels-idx1-ubyte.gz"
if out=$(timeout -k 5 60 "$train" --out "$(mktemp -d)" --workers 1 --epochs 1 --data "$cut" 2>&1 </dev/null); then
  fail "a run on cut-short labels passed"
elif ! grep -qF "$cut/train-labels-idx1-ubyte.gz: truncated in the labels: expected 60000 bytes, got 29992" <<<"$out"; then
  fail "cut-short labels not named: $out"
elif ! grep -qF "rdmaps-train: error (io): worker 0 failed: it exited with status 1" <<<"$out"; then
  fail "the run on cut-short labels did not end with the worker's error kind: $out"
else
  echo "ok: cut-short labels named by the worker, the run's error is its kind (io)"
fi
rm -rf "$cut"
helps "$train" -- "(Env:RDMAPS_SHARD_FLOATS)"
helps "$train" -- "--virtual-workers"
defaults "$config_group" "$train"
defaults "Training:" "$train"
# Its rule comes from --dc (adaptive), not from Config's sgd.
helps "$train" -- "--rule sgd|momentum|dc-asgd-c|dc-asgd-a=dc-asgd-a"

if [ -n "$perf" ]; then
  echo "== rdmaps-perf transport"
  exit_status 2 "$perf" transport --bogus
  exit_status 2 "$perf" transport --span 1000 --sizes 64K
  refused "--iters: '0'" "$perf" transport --iters 0
  # Its children's flags by hand were taken and ignored (--report-fd silenced the run).
  refused "--index: set by rdmaps-perf ps for the processes it starts (--role server)" "$perf" ps --index 3
  refused "--report-fd: set by rdmaps-perf ps for the processes it starts" "$perf" ps --report-fd 99
  refused "--role: set by rdmaps-perf ps for the processes it starts" "$perf" ps --role server
  refused "--index: 'abc' is not a whole number" "$perf" ps --index abc
  refused "--report-fd: '-3' is not a whole number" "$perf" transport --report-fd -3
  # A span below a message was one buffer, reused, reported as a span of the message's size.
  refused "--span 1000 bytes holds no message of the largest --sizes, 65536 bytes" \
    "$perf" transport --span 1000 --sizes 64K --iters 16 --lat-iters 0
  refused "--target-span 4096 bytes holds no message of the largest --sizes, 65536 bytes" \
    "$perf" transport --op put --span 1M --target-span 4K --sizes 64K --iters 16 --lat-iters 0
  # A span past memory was killed by the out-of-memory killer without a word (a local target takes as much again).
  if [ "$(awk '/^MemAvailable:/ { print int($2 / 1048576) }' /proc/meminfo)" -lt 30 ]; then
    refused "--span 17.2 GB: its buffers take 34.4 GB (the source and the local target each one), but" \
      "$perf" transport --span 16G --sizes 1M --iters 1
  fi
  # A training job's RDMAPS_CHECKPOINT_DIR, exported, took the benchmark's checkpoint, and the job's --resume then
  # refused it: the benchmark checkpoints where its flag says only.
  ckpt=$(mktemp -d)
  if ! out=$(env RDMAPS_CHECKPOINT_DIR="$ckpt" timeout -k 5 60 "$perf" ps --floats 64K --iters 2 --workers 1 --bound off 2>&1); then
    fail "rdmaps-perf ps with RDMAPS_CHECKPOINT_DIR set failed: $out"
  elif [ -n "$(ls -A "$ckpt")" ]; then
    fail "rdmaps-perf ps wrote into RDMAPS_CHECKPOINT_DIR: $(ls "$ckpt")"
  else
    echo "ok: rdmaps-perf ps leaves RDMAPS_CHECKPOINT_DIR alone"
  fi
  rm -rf "$ckpt"
  refused "--workers 256 and --servers 256: a run starts a process for each, at most 256 in all" "$perf" ps --workers 256 --servers 256
  # Results that did not reach standard output exited 0 (rdmaps-perf --json > file on a full disk).
  # shellcheck disable=SC2016  # $0 is sh's
  refused "rdmaps-perf: error: its output did not reach standard output" sh -c '"$0" --help >/dev/full' "$perf"
  refused "--sizes: '0'" "$perf" transport --sizes 8,0
  # A UCX that does not start showed as "UCX 1.13.1 ( memory)" in the banner above its error.
  refused " (does not start: ucp_init: " env UCX_TLS=bogus "$perf" transport --sizes 8 --iters 1
  refused "--sizes: '8,,64' has an empty entry" "$perf" transport --sizes 8,,64
  refused "--sizes: '1x' is not a size" "$perf" transport --sizes 8,1x
  # Given twice, the last list counts: the target refuses any.
  refused "--sizes: the target (--role server) does as its client says" "$perf" transport --role server --sizes 0 --sizes 8
  refused "--window: '4294967297'" "$perf" transport --window 4294967297
  refused "unknown flag --floats" "$perf" transport --floats 0
  refused "flag --sizes needs a value" "$perf" transport --sizes
  refused "--listen: only the target (--role server) listens" "$perf" transport --listen 127.0.0.1:9
  refused "--peer: the target (--role server) connects to nobody" "$perf" transport --role server --peer 127.0.0.1:9
  refused "--listen: only the target (--role server) listens" "$perf" transport --json off --listen 127.0.0.1:9
  refused "--peer: address 'foo' has no port" "$perf" transport --peer foo
  refused "--peer: '' is not an address" "$perf" transport --peer ""
  # Every latency sample is kept: 4 Gi of them aborted on out of memory.
  refused "--lat-iters: '4294967296' is not a whole number from 0 to 16777216" "$perf" transport --lat-iters 4G
  # The target does as its client says; the client's own flags there were ignored without a word.
  refused "--op: the target (--role server) does as its client says" "$perf" transport --role server --op get
  refused "--target-memory: the target (--role server) chooses its memory" \
    "$perf" transport --peer 127.0.0.1:9 --target-memory registered
  refused "--listen: address 'foo' has no port" "$perf" transport --role server --listen foo
  # Pointed at a parameter server, it was told to set a secret it never reads, or (one without a secret) that a
  # region descriptor had the wrong magic.
  for secret in RDMAPS_SECRET=check-flags-secret-0123 "-u RDMAPS_SECRET"; do
    log=$(mktemp)
    # shellcheck disable=SC2086  # an assignment, or -u NAME: two words
    env -u RDMAPS_SECRET_FILE $secret "${s[@]}" >"$log" 2>&1 </dev/null &
    for _ in $(seq 300); do grep -q " listening on " "$log" && break; kill -0 $! 2>/dev/null || break; sleep 0.1; done
    address=$(sed -n 's/.* listening on \([^ ]*\) .*/\1/p' "$log" | head -1)
    if [ -z "$address" ]; then
      fail "a server for rdmaps-perf transport --peer did not start: $(cat "$log")"
    else
      refused "is this address a parameter server?" "$perf" transport --peer "$address" --sizes 8 --iters 1
    fi
    kill $! 2>/dev/null; wait $! 2>/dev/null; rm -f "$log"
  done
  helps "$perf" transport -- "--sizes"
  # 0 is refused: as a default it stands for the computed count the help describes.
  helps "$perf" transport -- "--iters SIZE=auto"
  helps "$perf" transport -- "--window SIZE=auto"
  echo "== rdmaps-perf ps"
  refused "--workers: '4294967297'" "$perf" ps --workers 4294967297
  refused "--floats: '0'" "$perf" ps --floats 0
  refused "--floats: '1099511627776' is not a whole number from 1 to 2147483648" "$perf" ps --floats 1T
  # Decimal digits and a unit only: CLI11 read 010 as octal 8, took hex before a unit, a leading space, and
  # wrapped -1K.
  refused "--servers 10 is more than --floats 3" "$perf" ps --servers 010 --floats 3
  refused "--tensors 1000000 is more than --floats 10240" "$perf" ps --tensors 1000000 --floats 010K
  refused "--floats: '0x1K' is not a size" "$perf" ps --floats 0x1K
  refused "--floats: ' 5' is not a size" "$perf" ps --floats " 5"
  refused "--floats: '-1K' is not a size" "$perf" ps --floats -1K
  refused "unknown flag --lr" "$perf" ps --lr -0.5
  refused "unknown flag --no-such-flag" "$perf" ps --no-such-flag
  refused "flag --floats needs a value" "$perf" ps --floats
  refused "--tensors 20 is more than --floats 10" "$perf" ps --floats 10 --tensors 20
  refused "--tensors 20 is more than --floats 10" "$perf" ps --json off --gpu-shard off --floats 10 --tensors 20
  refused "--servers 20 is more than --floats 10: every server needs" "$perf" ps --floats 10 --servers 20
  refused "RDMAPS_SHARD_FLOATS: '0'" env RDMAPS_SHARD_FLOATS=0 "$perf" ps
  refused "--checkpoint-every: '99999999999999999999'" "$perf" ps --checkpoint-every 99999999999999999999
  helps "$perf" ps -- "(Env:RDMAPS_SHARD_FLOATS)"
  helps "$perf" ps -- "--iters SIZE=auto"
  defaults "$config_group" "$perf" ps
  echo "== rdmaps-perf gpu"
  refused "--floats: '0'" "$perf" gpu --floats 0
  refused "--push-floats: '0'" "$perf" gpu --push-floats 0
  refused "unknown flag --lambda" "$perf" gpu --lambda -5
  refused "flag --iters needs a value" "$perf" gpu --iters
  helps "$perf" gpu -- "--floats"
fi

# Short of memory for a thread (ulimit -v), rdmaps-server says so and exits 1:
# it caught rdmaps::Error alone, and a std::system_error from a thread that
# could not start ended in "terminate called" and an abort. From a limit too
# small to load the program up to one that serves, none ends so (UCX's own
# thread, refused, asserts in UCX 1.13: not ours to catch), each that exits 1
# or 2 says why, and one serves (a loop that never got there passed).
echo "== rdmaps-server short of memory"
served=""
for kib in $(seq 20000 5000 120000); do
  out=$( (ulimit -v "$kib"; timeout -k 5 2 "$server" --listen 127.0.0.1:0 --metrics 127.0.0.1:0) 2>&1 </dev/null)
  status=$?
  if grep -q "terminate called" <<<"$out"; then
    fail "rdmaps-server under ulimit -v $kib aborted (exit $status): $out"
    break
  fi
  [ $status -eq 124 ] && { served=$kib; echo "ok: serves from ulimit -v $kib on, no abort below"; break; }
  case $status in
    1 | 2) grep -q "rdmaps-server: error" <<<"$out" ||
      fail "rdmaps-server under ulimit -v $kib exited $status without saying why: $out" ;;
    134) grep -q "libucs" <<<"$out" || fail "rdmaps-server under ulimit -v $kib aborted outside UCX: $out" ;;
    127) ;;  # too small to load the program
    *) fail "rdmaps-server under ulimit -v $kib exited $status: $out" ;;
  esac
done
[ -n "$served" ] || fail "rdmaps-server served under no ulimit -v up to 120000 KiB"

[ $failures -eq 0 ] && echo "every bad flag and variable refused, naming it; every --help lists the flags" && exit 0
echo "$failures flag check(s) failed"
exit 1
