#include "cuda/driver_pointer.h"

#include <dlfcn.h>

#include <cstdint>

namespace rdmaps::cuda {
namespace {

// Values of cuda.h, which a CPU build does not have.
constexpr int kSuccess = 0;
constexpr int kAttributeMemoryType = 2;     // CU_POINTER_ATTRIBUTE_MEMORY_TYPE
constexpr int kAttributeDeviceOrdinal = 9;  // CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
constexpr unsigned kMemoryTypeDevice = 2;   // CU_MEMORYTYPE_DEVICE (managed memory too)

struct Driver {
  using Init = int (*)(unsigned);
  using GetAttributes = int (*)(unsigned, int*, void**, unsigned long long);
  GetAttributes get_attributes = nullptr;

  Driver() {
    // Kept open for the process: the CUDA runtime holds the same library.
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
    auto init = reinterpret_cast<Init>(dlsym(lib, "cuInit"));
    auto get = reinterpret_cast<GetAttributes>(dlsym(lib, "cuPointerGetAttributes"));
    // cuInit makes no context; failing (no device, a driver too old), no
    // device memory can have been made in this process either.
    if (init && get && init(0) == kSuccess) get_attributes = get;
  }
};

}  // namespace

DriverAnswer ask_driver(const void* p) {
  static const Driver driver;
  if (!driver.get_attributes || !p) return {true, -1};
  unsigned type = 0;
  int ordinal = -1;
  int attributes[] = {kAttributeMemoryType, kAttributeDeviceOrdinal};
  void* data[] = {&type, &ordinal};
  // Memory CUDA does not know is answered with zeros, not an error.
  if (driver.get_attributes(2, attributes, data, reinterpret_cast<uintptr_t>(p)) != kSuccess) return {};
  if (type != kMemoryTypeDevice) return {true, -1};
  return {ordinal >= 0, ordinal};
}

}  // namespace rdmaps::cuda
