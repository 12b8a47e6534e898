// CUDA runtime failures as rdmaps errors (the .cu files' one check()).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "rdmaps/error.h"

namespace rdmaps::cuda {

/// Throws `err` naming `what`. The thread's last error is cleared first: left
/// set, the next kernel launch (a lane applying a push after a worker's
/// allocation failed) reported it as its own.
inline void check(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();
  // The runtime is linked in (docs/cluster.md "Building for your GPUs"): a
  // cluster's older driver fails every call, said as the bare CUDA string.
  const std::string driver =
      err == cudaErrorInsufficientDriver
          ? " (this rdmaps carries the CUDA " + std::to_string(CUDART_VERSION / 1000) +
                " runtime, which needs a newer NVIDIA driver: update it, or build rdmaps with the nvcc of a CUDA "
                "the driver supports)"
          : "";
  throw Error(err == cudaErrorMemoryAllocation     ? Errc::kNoMemory
              : err == cudaErrorInsufficientDriver ? Errc::kUnsupported
                                                   : Errc::kInternal,
              "CUDA " + what + ": " + cudaGetErrorString(err) + driver);
}

}  // namespace rdmaps::cuda
