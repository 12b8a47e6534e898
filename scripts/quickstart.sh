#!/usr/bin/env bash
# The main job on its embedded default, from a fresh Debian 12 machine:
# installs what is missing, builds, and trains an MLP on Fashion-MNIST with one
# parameter server and four asynchronous workers (local processes, shared
# memory). Extra arguments go to rdmaps-train (see rdmaps-train --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build
exec build/src/rdmaps-train "$@"
