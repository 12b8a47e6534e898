#!/usr/bin/env bash
# Installs the Debian 12 packages rdmaps needs, only those missing.
set -euo pipefail
packages=(
  build-essential pkg-config meson ninja-build cmake   # cmake: the install test builds a CMake consumer
  libucx-dev ucx-utils            # transport (UCX UCP) and ucx_perftest
  libibverbs-dev librdmacm-dev    # HCA description (optional at build time)
  libeigen3-dev zlib1g-dev
  libssl-dev                      # HMAC-SHA-256 for the bootstrap handshake (libcrypto)
  libcli11-dev nlohmann-json3-dev # command lines (src/api/cli.h) and the JSON the tools print
  prometheus                      # the metrics test scrapes a training job with a real Prometheus
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist gnuplot-nox   # the training job's data and plot
  clang-format bc curl            # curl: the metrics tests read /metrics
  locales                         # localedef: the metrics test formats numbers under a comma locale
  iproute2 iptables               # network-fault tests: namespaces, veth, packet loss
  libpmix-dev                     # server addresses through the launcher's PMIx store
  openmpi-bin slurm-wlm munge     # the launcher tests: mpirun, and srun on a one-node Slurm
  python3-dev pybind11-dev python3-pybind11 python3-numpy   # the rdmaps Python module
  python3-torch                   # rdmaps.torch and its tests (Debian's torch 1.13, CPU)
  python3-mesonpy python3-venv python3-pip   # pip install --no-build-isolation . and its test
  libopenblas0-openmp             # torch's BLAS; the default reference BLAS is 14x slower
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || {
    echo "install-deps: not root and no sudo: run this as root (su -c $0), or install: ${missing[*]}" >&2
    exit 1
  }
  sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
# Through env: sudo's env_reset drops DEBIAN_FRONTEND, and a package (tzdata) then asked.
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
