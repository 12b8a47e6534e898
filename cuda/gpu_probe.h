// What the GPU side of this machine offers; answers "none" in a CPU build.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace rdmaps::cuda {

struct GpuDevice {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;  ///< compute capability
  size_t memory_bytes = 0;
  std::string pci_bus_id;
  int dmabuf = -1;  ///< CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED: 1 yes, 0 no, -1 unknown
};

struct GpuInfo {
  bool built_with_cuda = false;
  int runtime_version = 0, driver_version = 0;  ///< e.g. 13000
  std::vector<GpuDevice> devices;
  std::string reason;  ///< why there are no devices, when there are none
  int device_count() const { return static_cast<int>(devices.size()); }
};

GpuInfo probe_gpus();

}  // namespace rdmaps::cuda
