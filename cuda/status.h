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
  throw Error(err == cudaErrorMemoryAllocation ? Errc::kNoMemory : Errc::kInternal,
              "CUDA " + what + ": " + cudaGetErrorString(err));
}

}  // namespace rdmaps::cuda
