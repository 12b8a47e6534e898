#!/usr/bin/env bash
# Builds with warnings as errors and runs every test suite, plus the style
# check. Prints "N passed, N failed" last.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
build=build-test
scripts/build.sh "$build" -Dwerror=true -Dbuildtype=debugoptimized

status=0
# Style: clang-format must leave every C/C++/CUDA file unchanged.
mapfile -t sources < <(git ls-files '*.h' '*.c' '*.cc' '*.cu' 2>/dev/null || find . -name '*.h' -o -name '*.c' -o -name '*.cc' -o -name '*.cu')
if ! clang-format --dry-run --Werror "${sources[@]}" 2>/tmp/rdmaps-format.log; then
  echo "style: clang-format would change these files (run: clang-format -i \$(git ls-files '*.h' '*.cc' '*.cu')):"
  grep -E '^[^ :]+:[0-9]+:[0-9]+: ' /tmp/rdmaps-format.log | cut -d: -f1 | sort -u | sed 's/^/  /'
  status=1
  style_failed=1
fi

meson test -C "$build" --print-errorlogs || status=1
/usr/bin/python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"): passed += 1
    elif r == "SKIP": skipped += 1
    else: failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
[ -z "${style_failed:-}" ] || echo "style check FAILED (see above)"
exit $status
