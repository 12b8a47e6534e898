#!/usr/bin/env bash
# A program or the Python extension of one build refuses another build's
# librdmaps, naming both, instead of crashing in it (it used to segfault in
# Server.stats() and ~ServerStats); the soname carries the ABI; --version,
# rdmaps-info and rdmaps.__version__ tell builds apart.
#   tests/tools/check_abi.sh BUILD_ROOT SOURCE_ROOT OTHER_LAYOUT.so OTHER_ABI.so [PYTHON]
set -uo pipefail
build=$(realpath "$1") src=$(realpath "$2") other_layout=$(realpath "$3") other_abi=$(realpath "$4") python=${5:-}
server=$build/src/rdmaps-server info=$build/src/rdmaps-info
failed=0
fail() { echo "check_abi: FAIL: $*" >&2; failed=1; }

abi=$(sed -n 's/^#define RDMAPS_ABI_VERSION \([0-9]*\)$/\1/p' "$src/include/rdmaps/version.h")
[ -n "$abi" ] || { echo "check_abi: FAIL: no RDMAPS_ABI_VERSION in rdmaps/version.h"; exit 1; }
lib=$build/src/librdmaps.so.$abi
if ! soname=$(readelf -d "$lib" 2>&1 | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p') || [ "$soname" != "librdmaps.so.$abi" ]; then
  fail "$lib: soname '$soname', not librdmaps.so.$abi"
fi

# PEP 440 (a public version and a local label), as packaging's Version takes it.
pep440='^[0-9]+(\.[0-9]+)*(\+[a-z0-9]+(\.[a-z0-9]+)*)?$'
version=$("$server" --version 2>&1) || fail "rdmaps-server --version exited $?: $version"
grep -Eq "$pep440" <<<"$version" || fail "rdmaps-server --version: '$version' is no build version"
out=$("$info" 2>&1) || fail "rdmaps-info exited $?: $out"
grep -qF "rdmaps $version (librdmaps ABI $abi, " <<<"$out" || fail "rdmaps-info does not name the build: $out"
[ "$("$info" --version 2>&1)" = "$version" ] || fail "rdmaps-info --version differs from rdmaps-server's ($version)"
# rdmaps-perf takes it before a benchmark's name too, as the other programs do.
perf=$build/bench/rdmaps-perf
if [ -x "$perf" ]; then
  [ "$("$perf" --version 2>&1)" = "$version" ] || fail "rdmaps-perf --version: '$("$perf" --version 2>&1)', not $version"
fi

# refused WHAT OUTPUT STATUS: the program or import refused the library by
# name, with both sides' ABI, and did not crash.
refused() {
  local what=$1 out=$2 status=$3
  if [ "$status" -eq 0 ]; then fail "$what ran on another build's library: $out"; return; fi
  if [ "$status" -gt 128 ]; then fail "$what crashed (exit $status): $out"; return; fi
  for want in "is not the librdmaps this was built for" "layout 1)" "(ABI $abi, layout" "/librdmaps.so.$abi"; do
    grep -qF -- "$want" <<<"$out" || { fail "$what: message lacks '$want': $out"; return; }
  done
  echo "check_abi: ok: $what refused: $(grep -F 'is not the librdmaps' <<<"$out" | tail -1)"
}
for fake in "$other_layout" "$other_abi"; do
  for program in "$server" "$info"; do
    out=$(LD_PRELOAD=$fake "$program" --help 2>&1)
    status=$?
    refused "$(basename "$program") with $(basename "$fake")" "$out" $status
  done
  if [ -n "$python" ]; then
    out=$(cd / && LD_PRELOAD=$fake PYTHONPATH="$build/python" "$python" -c 'import rdmaps' 2>&1)
    status=$?
    refused "import rdmaps with $(basename "$fake")" "$out" $status
    grep -q "^ImportError: rdmaps: " <<<"$out" || fail "import rdmaps with $(basename "$fake"): no ImportError: $out"
  fi
done

if [ -n "$python" ]; then
  if ! out=$(cd / && PYTHONPATH="$build/python" "$python" -c 'import rdmaps; print(rdmaps.__version__)' 2>&1); then
    fail "import rdmaps failed on its own library: $out"
  elif [ "$out" != "$version" ]; then
    fail "rdmaps.__version__ '$out' is not the build's version '$version'"
  fi
fi
[ $failed -eq 0 ] && echo "check_abi: ok (librdmaps.so.$abi, $version)"
exit $failed
