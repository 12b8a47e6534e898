#!/usr/bin/env bash
# Builds with warnings as errors and runs every test suite, plus the style
# check. Prints "N passed, N failed", then each failed case, last.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
phase() { echo "test.sh: $1 at ${2:-$SECONDS} s"; }  # where the time went (CI's limit is 20 minutes)
scripts/install-deps.sh
phase "dependencies checked"
build=build-test
# -g1: line tables, enough for a backtrace; full debug info (-g) made the
# compile take 1.4x as long. A unity build: 193 s and 379 CPU-seconds here
# against 245 s and 483 compiling each file on its own (session 50), on a
# machine whose two cores bound this script. A .cc that lacks an include
# shows in the default build (scripts/quickstart.sh, meson setup), not unity.
# The shared library only: with default_library=both, Meson 1.0's unity
# build lists CUDA and C++ unity objects for the archive that no rule makes
# (rdmaps-unity17.cpp.o, session 66); tests/install links the archive where a
# build has one (checked by hand: a non-unity build with both).
scripts/build.sh "$build" -Dwerror=true -Dbuildtype=debugoptimized -Dcpp_args=-g1 -Dc_args=-g1 -Dunity=on
phase "built"

# The transport and server/client tests and the fuzzers once more under
# AddressSanitizer and UndefinedBehaviorSanitizer (UCX's own allocations are
# not ours to leak-check), run after the other tests. -O0 without debug info:
# at -O1 UBSan's checks made the build 1.6x as dear (587 against 361
# CPU-seconds here) for tests that ran 6 % faster (227 against 241 s). A
# unity build: 192 CPU-seconds instead of 309. The
# build runs while the other tests do, in SCHED_IDLE: it takes only the CPU
# time they leave (most of the tests wait on processes, sockets and timeouts)
# and yields at once to any of theirs; shared caches still slowed them (700 s
# of tests alone took 900 s beside the -O1 build).
asan=build-asan
asan_log=$build/asan-build.log
(
  if [ ! -f "$asan/build.ninja" ]; then
    meson setup "$asan" -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=plain -Dcpp_args=-O0 \
      -Dc_args=-O0 -Dunity=on -Dcuda=disabled -Dpython=disabled -Dbenchmarks=false
  fi
  exec chrt --idle 0 ninja -C "$asan" tests/transport_tests tests/ps_tests tests/fuzz_tests tests/c_abi_test
) >"$asan_log" 2>&1 &
asan_build=$!
trap 'kill "$asan_build" 2>/dev/null || true' EXIT

status=0
# Style: clang-format must leave every C/C++/CUDA file unchanged.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t sources < <(git ls-files '*.h' '*.c' '*.cc' '*.cu')
else  # a release tarball or a copy without git: the source folders only, never build output
  mapfile -t sources < <(find include src transport cuda bench tests python -type f \( -name '*.h' -o -name '*.c' \
    -o -name '*.cc' -o -name '*.cu' \) 2>/dev/null | sort)
fi
# The log in the build folder, not a fixed /tmp name another user may own (the
# redirect failed, and set -e then stopped this script before any test ran).
format_log=$build/format.log
if ! clang-format --dry-run --Werror "${sources[@]}" 2>"$format_log"; then
  echo "style: clang-format would change these files (run: clang-format -i \$(git ls-files '*.h' '*.cc' '*.cu')):"
  grep -E '^[^ :]+:[0-9]+:[0-9]+: ' "$format_log" | cut -d: -f1 | sort -u | sed 's/^/  /' ||
    sed 's/^/  /' "$format_log"  # an error of clang-format's own (a listed file that is gone)
  status=1
  style_failed=1
fi

# Three at a time where tests may share the machine (tests/meson.build says which, and why).
meson test -C "$build" --num-processes 3 --print-errorlogs || status=1
phase "tests done"

asan_built=0
wait "$asan_build" || asan_built=$?
trap - EXIT
asan_done=$(($(stat -c %Y "$asan/.ninja_log" 2>/dev/null || date +%s) - started))  # its last step's time
phase "sanitizer build done" $((asan_done < 0 ? 0 : asan_done))
if [ "$asan_built" -ne 0 ]; then
  tail -n 40 "$asan_log"
  echo "the sanitizer build failed (above; whole log: $asan_log)"
  exit 1
fi
# Three streams at once, balanced by measured times (below). The phase is
# CPU-bound, so it runs less: ps's cases over tcp only, whose active-message
# path copies every message through our code (the shm cases' put path lands
# in the same slots, read by the same reader; transport's tests put and get
# over shm under the sanitizers), and fuzz's first 25,000 inputs of the main
# run's 200,000 (same seed).
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
rm -f "$asan"/meson-logs/asan-*.json "$asan"/asan-*.out
asan_test() {  # TEST: one test, its output kept in $asan/asan-TEST.out
  meson test -C "$asan" --no-rebuild --logbase "asan-$1" --print-errorlogs "$1" >"$asan/asan-$1.out" 2>&1
}
# ps's parametrized cases over tcp (above; the consistency cases are named shm_threads1 and so on: 44 s of
# the phase's streams went to those until session 50); its other cases take no transport. The consistency
# cases at two server threads only: one thread runs the same lane code (about 30 s of the streams'
# 780 case-seconds, session 67); the main run takes both.
shm_off='-*/shm:*/shm_*:*/tcp_threads1'
asan_run() {  # TEST, with its settings
  case $1 in
    ps-*) GTEST_FILTER=$shm_off asan_test "$1" ;;
    fuzz) RDMAPS_FUZZ_RUNS=25000 asan_test fuzz ;;  # the normal build's run takes 200,000 (same seed)
    *) asan_test "$1" ;;  # c-abi: destroy while running, fork, callbacks: the use-after-free it guards shows here
  esac
}
# Three streams, the longest tests first and the short ones after the
# shortest of those (a clean clone, session 67, after its cuts: ps-1 166 s,
# ps-2 115, ps-0 112, transport 70, fuzz 33, c-abi 11; the streams then
# ended at 115, 182 and 210 s; session 65's order was ps-2 | ps-1 fuzz c-abi).
streams=("ps-1" "ps-0 transport" "ps-2 fuzz c-abi")
pids=()
for stream in "${streams[@]}"; do
  (
    s=0
    for t in $stream; do asan_run "$t" || s=1; done
    exit $s
  ) &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
cat "$asan"/asan-*.out
phase "sanitizer tests done"

/usr/bin/python3 - "$build/meson-logs/testlog.json" "$asan"/meson-logs/asan-*.json <<'PY'
import json, sys
for paths, name in ((sys.argv[1:2], ""), (sys.argv[2:], " under sanitizers")):
    passed = failed = skipped = 0
    for path in paths:
        for line in open(path):
            r = json.loads(line)["result"]
            if r in ("OK", "EXPECTEDFAIL"): passed += 1
            elif r == "SKIP": skipped += 1
            else: failed += 1
    print(f"{passed} passed, {failed} failed, {skipped} skipped{name}")
# CI keeps the tail of this output: name each failed case and its first assertion here, last (session 51: a
# ps shard failed on CI and only its name survived). A test's odd bytes must not end the listing.
sys.stdout.reconfigure(errors="replace")
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)
        if r["result"] in ("OK", "EXPECTEDFAIL", "SKIP"): continue
        out = ((r.get("stdout") or "") + (r.get("stderr") or "")).splitlines()
        shown = [f"FAILED {r['name']} ({path.rsplit('/', 1)[-1]}, {r['result']}):"]
        for i, l in enumerate(out):
            # gtest's, unittest's, and the C tests' "FAILED file:line: why" (session 68: shown only as the tail)
            if l.startswith(("[  FAILED  ]", "FAIL:", "ERROR:", "FAILED ")) and not l.endswith(" listed below:"):
                shown.append("  " + l)
            elif l.endswith(": Failure") or l.startswith("AssertionError") or ": FAIL: " in l:
                # a script's own "name: FAIL: why" too (session 67: a shell check's reason was not shown)
                shown += ["  " + x[:300] for x in out[i:i + 4]]
        if len(shown) == 1:  # nothing recognised: the output's end
            shown += ["  " + x[:300] for x in out[-8:]]
        print("\n".join(dict.fromkeys(shown[:40])))
PY
[ -z "${style_failed:-}" ] || echo "style check FAILED (see above)"
exit $status
