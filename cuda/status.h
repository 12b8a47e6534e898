// CUDA runtime failures as rdmaps errors (the .cu files' one check()).
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "rdmaps/error.h"

namespace rdmaps::cuda {

/// Throws `err` naming `what` and the thread's GPU (a node has several). The
/// thread's last error is cleared first: left set, the next kernel launch (a
/// lane applying a push after a worker's allocation failed) reported it as its own.
inline void check(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();
  int device = -1;
  const std::string on = cudaGetDevice(&device) == cudaSuccess ? " on GPU " + std::to_string(device) : "";
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
              "CUDA " + what + on + ": " + cudaGetErrorString(err) + driver);
}

/// check() of a copy, naming what it read and wrote ("staging copy of
/// 4194304 bytes from 0x7f... to 0x7f..."); the text is made only on failure
/// (a staged push copies every chunk through here).
inline void check_copy(cudaError_t err, size_t bytes, const void* from, const void* to, const char* what = "copy") {
  if (err == cudaSuccess) return;
  char text[128];
  std::snprintf(text, sizeof(text), "%s of %zu bytes from %p to %p", what, bytes, from, to);
  check(err, text);
}

}  // namespace rdmaps::cuda
