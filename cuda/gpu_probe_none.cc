#include "cuda/gpu_probe.h"

namespace rdmaps::cuda {

GpuInfo probe_gpus() {
  GpuInfo info;
  info.reason = "built without CUDA (meson -Dcuda=disabled, or nvcc not found)";
  return info;
}

}  // namespace rdmaps::cuda
