#!/usr/bin/env bash
# Readies a bundle for a lent GPU machine's one call (docs/benchmarks.md
# "Reproduce"), here, before the call: keeps only the programs
# bench/device_check.sh runs (a CUDA build's other test programs took 12 of
# the 64 MiB the call carries), and refuses a bundle that lacks one of them,
# a library one of them needs beyond the base system, UCX's cma module, or
# the dataset (every run there would fail, or shm would run without cma), or
# that would not fit beside the repository's tracked files.
#
#   bench/bundle_check.sh BUNDLE
set -euo pipefail
bundle=${1:?usage: bench/bundle_check.sh BUNDLE}
fail() { echo "bundle_check.sh: $bundle: $*" >&2; exit 1; }
# A bundle has bin/, data/ and env.sh: anything else (a bin/ of the system's)
# is never pruned.
[ -d "$bundle/bin" ] && [ -f "$bundle/env.sh" ] || fail "not a bundle (it needs bin/ and env.sh)"
programs=(rdmaps-perf rdmaps-train rdmaps-info gpu_tests)
for p in "${programs[@]}"; do
  [ -x "$bundle/bin/$p" ] || fail "no bin/$p (build with -Dcuda=enabled, then bundle that build)"
done
# With the bundle's env.sh, as there, every library a program needs resolves
# into the bundle, but the base system's (the lent machine has the C and C++
# runtimes and the driver; no UCX, rdma-core, numa or the build tree).
base='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|libz|libcuda)\.so'
bundle_abs=$(cd "$bundle" && pwd)
for p in "${programs[@]}"; do
  outside=$( (set +u; source "$bundle_abs/env.sh" >/dev/null 2>&1; ldd "$bundle_abs/bin/$p" 2>&1 || true) |
    awk -v b="$bundle_abs/" -v base="$base" '
      $1 ~ base { next }  # the driver may be missing here
      /not found/ { print $1 " (not found)"; next }
      $2 == "=>" && $3 ~ /^\// && index($3, b) != 1 { print $1 " (" $3 ")" }')
  [ -z "$outside" ] || fail "bin/$p needs, outside the bundle and the base system: $(echo $outside)"
done
# shm's single-copy transport is a module UCX loads from UCX_MODULE_DIR.
cma=$(set +u; source "$bundle_abs/env.sh" >/dev/null 2>&1; ls "${UCX_MODULE_DIR:-/nonexistent}"/libuct_cma.so* 2>/dev/null || true)
[ -n "$cma" ] || fail "no libuct_cma.so under env.sh's UCX_MODULE_DIR (lib/ucx/: UCX's modules)"
files=$({ find "$bundle/data" -name '*-idx[13]-ubyte*' 2>/dev/null || true; } | wc -l)
[ "$files" -ge 4 ] || fail "data/ holds $files of the 4 Fashion-MNIST files (bundle them: the training runs need them)"
keep=()
for p in "${programs[@]}"; do keep+=(! -name "$p"); done
find "$bundle/bin" -mindepth 1 -maxdepth 1 "${keep[@]}" -exec rm -rf {} +
# The call carries the bundle and the repository's tracked files, 64 MiB in all.
bundle_bytes=$(du -sb "$bundle" | cut -f1)
repo=$(cd "$(dirname "$0")/.." && pwd)
repo_bytes=$(git -C "$repo" ls-files -z | (cd "$repo" && xargs -0 stat -c %s 2>/dev/null || true) | awk '{ s += $1 } END { print s + 0 }')
total=$((bundle_bytes + repo_bytes))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
[ "$total" -lt $((63 * 1048576)) ] ||
  fail "$(mib "$bundle_bytes") with the repository's $(mib "$repo_bytes") is $(mib "$total"): over the 64 MiB a call carries (less a MiB to spare)"
echo "bundle_check.sh: $bundle ready: ${programs[*]}, $files data files; $(mib "$bundle_bytes") + the repository's $(mib "$repo_bytes") = $(mib "$total") of 64 MiB"
