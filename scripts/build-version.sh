#!/bin/sh
# Prints this build's version (meson's vcs_tag runs it): the project version
# $2, and where the source tree $1 is a git checkout, its commit as a PEP 440
# local label: 0.1.0+g1a2b3c4d5e6f, or 0.1.0+g1a2b3c4d5e6f.dirty with
# uncommitted changes. Outside a checkout (a release tarball) it fails, and
# meson uses the project version alone.
set -eu
src=$1 version=$2
top=$(git -C "$src" rev-parse --show-toplevel 2>/dev/null) || exit 1
# A tarball unpacked inside some other repository is no checkout of ours.
[ "$(cd "$top" && pwd -P)" = "$(cd "$src" && pwd -P)" ] || exit 1
commit=$(git -C "$src" rev-parse --short=12 HEAD)
dirty=
git -C "$src" diff --quiet HEAD -- 2>/dev/null || dirty=.dirty
echo "$version+g$commit$dirty"
