#!/usr/bin/env bash
# Installs the build into a scratch prefix and builds tests/install/consumer.cc
# (C++) and consumer.c (C) against it, each with pkg-config alone and with
# CMake's find_package, and runs them; the installed programs and Python package run from there too.
set -euo pipefail
build=$(cd "$1" && pwd); src=$(cd "$2" && pwd)
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
meson install -C "$build" --destdir "$prefix" --quiet >/dev/null
root="$prefix$(meson introspect "$build" --buildoptions | /usr/bin/python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')"
pc=$(dirname "$(find "$root" -name rdmaps.pc | head -1)")
export PKG_CONFIG_PATH="$pc"
# The .pc names the final prefix; point it at the scratch copy.
cflags=$(pkg-config --define-variable=prefix="$root" --cflags rdmaps)
libs=$(pkg-config --define-variable=prefix="$root" --libs rdmaps)
cxxflags=$(pkg-config --variable=cxxflags rdmaps)
[ "$cxxflags" = "-std=c++20" ] || { echo "FAILED: rdmaps.pc's cxxflags is '$cxxflags', not -std=c++20"; exit 1; }
c++ $cxxflags $cflags "$src/tests/install/consumer.cc" -o "$prefix/consumer" $libs -pthread
# Without it (g++ 12 defaults to C++17) the headers say what they need, not a std::span error deep inside.
if out=$(c++ -std=c++17 $cflags -fsyntax-only "$src/tests/install/consumer.cc" 2>&1); then
  echo "FAILED: the C++ headers compiled as C++17"; exit 1
fi
grep -q "rdmaps' C++ headers need C++20" <<<"$out" || { echo "FAILED: C++17 said: $(head -3 <<<"$out")"; exit 1; }
LD_LIBRARY_PATH="$(dirname "$(find "$root" -name 'librdmaps.so*' | head -1)")" "$prefix/consumer"
# The library installed under its ABI's soname (rdmaps/version.h), which the consumer asks for.
abi=$(sed -n 's/^#define RDMAPS_ABI_VERSION \([0-9]*\)$/\1/p' "$root/include/rdmaps/version.h")
[ -e "$(dirname "$(find "$root" -name 'librdmaps.so*' | head -1)")/librdmaps.so.$abi" ] ||
  { echo "FAILED: no librdmaps.so.$abi (RDMAPS_ABI_VERSION) installed"; exit 1; }
readelf -d "$prefix/consumer" | grep -qF "[librdmaps.so.$abi]" ||
  { echo "FAILED: the consumer does not ask for librdmaps.so.$abi: $(readelf -d "$prefix/consumer" | grep NEEDED)"; exit 1; }
# The .pc asks a consumer of the shared library for nothing (eigen3, libibverbs,
# pmix, then ucx and libcrypto were listed, so --cflags failed without their
# development files though no public header includes them).
requires=$(pkg-config --print-requires-private rdmaps | tr '\n' ' ')
if [ -f "$(dirname "$(find "$root" -name 'librdmaps.so*' | head -1)")/librdmaps.so" ] && [ -n "${requires// /}" ]; then
  echo "FAILED: rdmaps.pc requires $requires of a consumer of the shared library"; exit 1
fi
# Installed programs and the Python package find librdmaps by their own run
# path, in any prefix (this one is a DESTDIR copy), with no LD_LIBRARY_PATH.
# Every one installed (rdmaps-perf had no run path and was not listed here).
for installed in "$root"/bin/*; do
  [ -x "$installed" ] || continue
  program=$(basename "$installed")
  if ! out=$(env -u LD_LIBRARY_PATH "$installed" --help 2>&1); then
    echo "FAILED: the installed $program does not run: $out"; exit 1
  fi
done
ext=$(find "$root" -name '_rdmaps*.so' | head -1)
if [ -n "$ext" ]; then
  if ! out=$(cd / && env -u LD_LIBRARY_PATH PYTHONPATH="$(dirname "$(dirname "$ext")")" /usr/bin/python3 -c 'import rdmaps' 2>&1); then
    echo "FAILED: the installed Python package does not import: $out"; exit 1
  fi
fi
# The same consumer through CMake: find_package(rdmaps CONFIG) and rdmaps::rdmaps.
cmake -S "$src/tests/install/cmake" -B "$prefix/cmake-build" -DCMAKE_PREFIX_PATH="$root" >/dev/null
cmake --build "$prefix/cmake-build" >/dev/null
LD_LIBRARY_PATH="$(dirname "$(find "$root" -name 'librdmaps.so*' | head -1)")" "$prefix/cmake-build/consumer"
# A trainer in C: the C API with a C compiler, through pkg-config and through a CMake project without C++.
cc -std=c11 $cflags "$src/tests/install/consumer.c" -o "$prefix/consumer_c" $libs
# The C headers are C89 and C99 too, pedantically (a // comment with an apostrophe in a C++ block failed C89).
for std in c89 c99; do
  printf '#include <rdmaps/rdmaps.h>\n#include <rdmaps/version.h>\nint main(void) { return 0; }\n' |
    cc -std=$std -pedantic-errors -Werror $cflags -fsyntax-only -x c - ||
    { echo "FAILED: the C headers do not compile as $std"; exit 1; }
done
LD_LIBRARY_PATH="$(dirname "$(find "$root" -name 'librdmaps.so*' | head -1)")" "$prefix/consumer_c"
# Linked statically (default_library=static or both; CI builds shared only), with
# pkg-config --static alone: UCX, libcrypto and the rest, and the CUDA runtime
# where the archive has kernels (nvcc linked it into the shared library only:
# a static consumer failed on cudaMalloc; with both, the modules were not
# named at all). It starts a server, so the transport and UCX are linked in.
archive=$(find "$root" -name librdmaps.a | head -1)
if [ -n "$archive" ]; then
  static_libs=$(pkg-config --define-variable=prefix="$root" --static --libs rdmaps)
  # With both installed, -lrdmaps finds the .so: the archive by name.
  # shellcheck disable=SC2086
  cc -std=c11 $cflags "$src/tests/install/consumer.c" -o "$prefix/consumer_static" ${static_libs//-lrdmaps/-l:librdmaps.a} ||
    { echo "FAILED: consumer.c does not link librdmaps.a with pkg-config --static --libs rdmaps: $static_libs"; exit 1; }
  if readelf -d "$prefix/consumer_static" | grep -q "librdmaps\.so"; then
    echo "FAILED: the static consumer asks for librdmaps.so"; exit 1
  fi
  env -u LD_LIBRARY_PATH "$prefix/consumer_static" serve
elif [ -n "$(pkg-config --static --libs rdmaps | grep -o -- -lcudart_static)" ]; then
  echo "FAILED: rdmaps.pc names the static CUDA runtime for a shared librdmaps"; exit 1
fi
cmake -S "$src/tests/install/cmake_c" -B "$prefix/cmake-c-build" -DCMAKE_PREFIX_PATH="$root" >/dev/null
cmake --build "$prefix/cmake-c-build" >/dev/null
LD_LIBRARY_PATH="$(dirname "$(find "$root" -name 'librdmaps.so*' | head -1)")" "$prefix/cmake-c-build/consumer_c"
