#!/usr/bin/env bash
# Installs the build into a scratch prefix and builds tests/install/consumer.cc
# against it twice, with pkg-config alone and with CMake's find_package, and
# runs both.
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
c++ -std=c++20 $cflags "$src/tests/install/consumer.cc" -o "$prefix/consumer" $libs -pthread
LD_LIBRARY_PATH="$(dirname "$(find "$root" -name 'librdmaps.so*' | head -1)")" "$prefix/consumer"
# The same consumer through CMake: find_package(rdmaps CONFIG) and rdmaps::rdmaps.
cmake -S "$src/tests/install/cmake" -B "$prefix/cmake-build" -DCMAKE_PREFIX_PATH="$root" >/dev/null
cmake --build "$prefix/cmake-build" >/dev/null
LD_LIBRARY_PATH="$(dirname "$(find "$root" -name 'librdmaps.so*' | head -1)")" "$prefix/cmake-build/consumer"
