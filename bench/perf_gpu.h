// `rdmaps-perf gpu`: the GPU kernels' bandwidth against the device-to-device
// copy bandwidth measured in the same run, and staged pushes from device
// memory against pushes from pinned host memory. Exits 77 where no GPU is.
#pragma once

#include "cuda/gpu_probe.h"

namespace rdmaps::bench {

int perf_gpu_main(int argc, char** argv, int first);

/// Exit status of a benchmark skipped where no GPU is (meson and bench/gpu_check.sh read it so).
constexpr int kSkipExit = 77;
/// Whether `gpus` holds no device; if so, says "PREFIX: NEEDS needs a CUDA device: why" on stderr.
bool no_gpu(const cuda::GpuInfo& gpus, const char* prefix, const char* needs);

}  // namespace rdmaps::bench
