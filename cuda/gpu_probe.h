// What the GPU side of this machine offers; answers "none" in a CPU build.
#pragma once

#include <string>

namespace rdmaps::cuda {

struct GpuInfo {
  bool built_with_cuda = false;
  int device_count = 0;
  std::string reason;  ///< why there are no devices, when there are none
};

GpuInfo probe_gpus();

}  // namespace rdmaps::cuda
