#include <cuda_runtime.h>

#include "cuda/gpu_probe.h"

namespace rdmaps::cuda {

GpuInfo probe_gpus() {
  GpuInfo info;
  info.built_with_cuda = true;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    info.reason = std::string("CUDA runtime: ") + cudaGetErrorString(err);
    return info;
  }
  info.device_count = count;
  if (count == 0) info.reason = "CUDA runtime reports no devices";
  return info;
}

}  // namespace rdmaps::cuda
