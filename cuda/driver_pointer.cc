#include "cuda/driver_pointer.h"

#include <dlfcn.h>
#include <link.h>

#include <atomic>
#include <cstdint>
#include <mutex>

namespace rdmaps::cuda {
namespace {

// Values of cuda.h, which a CPU build does not have.
constexpr int kSuccess = 0;
constexpr int kAttributeMemoryType = 2;     // CU_POINTER_ATTRIBUTE_MEMORY_TYPE
constexpr int kAttributeIsManaged = 8;      // CU_POINTER_ATTRIBUTE_IS_MANAGED
constexpr int kAttributeDeviceOrdinal = 9;  // CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
constexpr unsigned kMemoryTypeDevice = 2;   // CU_MEMORYTYPE_DEVICE (managed memory too)

using Init = int (*)(unsigned);
using GetAttributes = int (*)(unsigned, int*, void**, unsigned long long);

std::atomic<GetAttributes> g_get{nullptr};
// No driver for good: not installed (a load failed) or without a device.
// Asked again per push, a failing dlopen searched the disk each time (tcp
// iterations 40 % slower).
std::atomic<bool> g_absent{false};
std::mutex g_open_mu;
// Objects ever loaded at the last look; read without the lock, written under it.
std::atomic<unsigned long long> g_adds_seen{~0ull};

// How many shared objects this process ever loaded: unchanged, libcuda was
// not loaded since the last look (16 ns, where a dlopen(RTLD_NOLOAD) of a
// name not loaded searched the disk for 87 us, per push).
unsigned long long objects_loaded() {
  unsigned long long adds = 0;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        *static_cast<unsigned long long*>(out) = info->dlpi_adds;
        return 1;
      },
      &adds);
  return adds;
}

GetAttributes open_driver(bool load) {
  if (GetAttributes get = g_get.load(std::memory_order_acquire)) return get;
  if (g_absent.load(std::memory_order_relaxed)) return nullptr;
  // Nothing loaded since the last look: no lock (it was taken per push and pull target).
  const unsigned long long adds = load ? 0 : objects_loaded();
  if (!load && adds == g_adds_seen.load(std::memory_order_relaxed)) return nullptr;
  std::lock_guard<std::mutex> lock(g_open_mu);
  if (GetAttributes get = g_get.load(std::memory_order_relaxed)) return get;
  if (!load) {
    if (adds == g_adds_seen.load(std::memory_order_relaxed)) return nullptr;
    g_adds_seen.store(adds, std::memory_order_relaxed);
  }
  // Kept open for the process: the CUDA runtime holds the same library.
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL | (load ? 0 : RTLD_NOLOAD));
  if (!lib) {
    g_absent.store(load, std::memory_order_relaxed);  // not loaded yet is no answer for good
    return nullptr;
  }
  auto init = reinterpret_cast<Init>(dlsym(lib, "cuInit"));
  auto get = reinterpret_cast<GetAttributes>(dlsym(lib, "cuPointerGetAttributes"));
  // cuInit makes no context; failing (no device, a driver too old), no
  // device memory can have been made in this process either.
  if (!init || !get || init(0) != kSuccess) {
    g_absent.store(true, std::memory_order_relaxed);
    return nullptr;
  }
  g_get.store(get, std::memory_order_release);
  return get;
}

}  // namespace

DriverAnswer ask_driver(const void* p, bool load) {
  const GetAttributes get = p ? open_driver(load) : nullptr;
  if (!get) return {true, -1, false};
  unsigned type = 0;
  int ordinal = -1;
  unsigned managed = 0;  // CU_POINTER_ATTRIBUTE_IS_MANAGED is a bool (unsigned int) in the driver's answer
  int attributes[] = {kAttributeMemoryType, kAttributeIsManaged, kAttributeDeviceOrdinal};
  void* data[] = {&type, &managed, &ordinal};
  // Memory CUDA does not know is answered with zeros, not an error.
  if (get(3, attributes, data, reinterpret_cast<uintptr_t>(p)) != kSuccess) return {};
  if (type != kMemoryTypeDevice) return {true, -1, false};
  return {ordinal >= 0, ordinal, managed != 0};
}

}  // namespace rdmaps::cuda
