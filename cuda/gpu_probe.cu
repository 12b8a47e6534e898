#include <cuda_runtime.h>
#include <dlfcn.h>

#include "cuda/gpu_probe.h"

namespace rdmaps::cuda {
namespace {

// The dma-buf attribute is only in the driver API; libcuda is opened at run
// time so that the library loads on machines without a driver.
int dmabuf_supported(int device) {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return -1;
  using GetAttribute = int (*)(int*, int, int);
  auto get = reinterpret_cast<GetAttribute>(dlsym(lib, "cuDeviceGetAttribute"));
  int value = -1;
  constexpr int kDmaBufSupported = 124;  // CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED
  if (!get || get(&value, kDmaBufSupported, device) != 0) value = -1;
  dlclose(lib);
  return value;
}

}  // namespace

GpuInfo probe_gpus() {
  GpuInfo info;
  info.built_with_cuda = true;
  cudaRuntimeGetVersion(&info.runtime_version);
  cudaDriverGetVersion(&info.driver_version);
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // not the next kernel launch's error
    info.reason = info.driver_version == 0 ? "no NVIDIA driver on this machine"
                                           : std::string("CUDA runtime: ") + cudaGetErrorString(err);
    return info;
  }
  if (count == 0) info.reason = "CUDA runtime reports no devices";
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    GpuDevice d;
    d.index = i;
    d.name = prop.name;
    d.major = prop.major;
    d.minor = prop.minor;
    d.memory_bytes = prop.totalGlobalMem;
    char bus[32] = {};
    if (cudaDeviceGetPCIBusId(bus, sizeof bus, i) == cudaSuccess) d.pci_bus_id = bus;
    d.dmabuf = dmabuf_supported(i);
    info.devices.push_back(d);
  }
  cudaGetLastError();  // a failed query above is said in `info`, not by the next kernel launch
  return info;
}

}  // namespace rdmaps::cuda
