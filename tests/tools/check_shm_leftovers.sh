#!/bin/bash
# No shared-memory file outlives its processes, SIGKILL included. With UCX's
# default (UCX_POSIX_USE_PROC_LINK=y) UCX unlinks each segment's file at once;
# with it off the files stay until freed, so a killed job leaves them, and the
# next rdmaps process removes those no live process holds (and only those).
# usage: check_shm_leftovers.sh RDMAPS_PERF
set -euo pipefail
perf=$1
dir=$(mktemp -d /dev/shm/rdmaps-leftovers-XXXXXX)
export UCX_POSIX_DIR=$dir  # this test's own directory: other jobs' files are not its business
jobs_started=()
cleanup() { for p in "${jobs_started[@]}"; do kill -9 -- "-$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; ls -la "$dir"; exit 1; }
count() { find "$dir" -maxdepth 1 -name 'ucx_shm_posix_*' | wc -l; }
start_job() {  # a long push benchmark in its own process group (it starts children); sets $job
  setsid "$perf" ps --transport shm --floats 2000000 --iters 100000 >/dev/null 2>&1 &
  job=$!
  jobs_started+=("$job")
}
wait_for_files() {  # [N]: until more than N files (default 0), up to 30 s
  for _ in $(seq 300); do [ "$(count)" -gt "${1:-0}" ] && return 0; sleep 0.1; done
  return 1
}
settled_count() {  # the count once two reads 0.5 s apart agree (a job starting still makes files)
  local a b
  a=$(count)
  for _ in $(seq 20); do sleep 0.5; b=$(count); [ "$a" = "$b" ] && break; a=$b; done
  echo "$a"
}
kill_job() { kill -9 -- "-$1"; wait "$1" 2>/dev/null || true; sleep 0.5; }
sweep() {  # any short rdmaps process over shm: its first context sweeps
  "$perf" transport --transport shm --op put --sizes 8 --iters 5 >/dev/null 2>"$dir.sweep.log" || {
    cat "$dir.sweep.log"
    fail "the sweeping process failed"
  }
}

# UCX's default: nothing to leave behind.
start_job
sleep 3
[ "$(count)" = 0 ] || fail "with UCX_POSIX_USE_PROC_LINK=y UCX kept $(count) files while running"
kill_job "$job"
[ "$(count)" = 0 ] || fail "a SIGKILLed job left $(count) files with UCX's default"

# Proc links off: a killed job's files stay, and the next process removes them.
export UCX_POSIX_USE_PROC_LINK=n
start_job
wait_for_files || fail "no shared-memory file appeared with UCX_POSIX_USE_PROC_LINK=n"
sleep 1
kill_job "$job"
left=$(count)
[ "$left" -gt 0 ] || fail "the killed job left nothing: this test no longer tests anything"
start_job  # a live job's files must survive the sweep
live=$job
# Its own files, not the stale ones (a loaded machine started it late).
wait_for_files "$left" || fail "the live job made no shared-memory file"
sleep 6  # older than the sweeper's minimum age, so only their being held protects them
before=$(settled_count)
sweep
grep -q "removed $left shared-memory file(s)" "$dir.sweep.log" ||
  fail "the sweep did not remove the $left stale files: $(cat "$dir.sweep.log")"
after=$(count)
[ "$after" -gt 0 ] && [ "$after" = $((before - left)) ] ||
  fail "$before files before the sweep, $left stale, $after after: a live job's files were touched"
kill -0 "$live" || fail "the live job died during the sweep"
kill_job "$live"
sleep 5
sweep
[ "$(count)" = 0 ] || fail "$(count) files left after the last sweep"
rm -f "$dir.sweep.log"
echo "ok: UCX's default leaves nothing after SIGKILL; with proc links off $left stale files were removed and a live job's $after kept"
