#!/usr/bin/env bash
# The main job on its embedded default, from a fresh Debian 12 machine:
# installs what is missing, builds, and measures one-sided puts between two
# local processes over shared memory (the training job takes this place once
# it exists). Extra arguments go to rdmaps-perf transport.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build
exec build/bench/rdmaps-perf transport --transport shm --op put --sizes 8,4K,64K,1M,16M "$@"
