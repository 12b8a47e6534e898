// CPU build: the GPU entry points exist and say why they cannot run.
#include "cuda/device_memory.h"
#include "cuda/driver_pointer.h"
#include "cuda/kernels.h"
#include "cuda/staging.h"
#include "rdmaps/error.h"

namespace rdmaps::cuda {
namespace {
[[noreturn]] void unsupported(const char* what) {
  throw Error(Errc::kUnsupported, std::string(what) + ": rdmaps was built without CUDA (nvcc not found)");
}
}  // namespace

// Device memory can reach a CPU build (a C++ caller's cudaMalloc'd span,
// torch's CUDA tensors): the driver, where something loaded it, tells it
// apart, and the GPU path refuses it. Managed memory the CPU reads: host here.
bool is_device_pointer(const void* p) { return device_of(p) >= 0; }
int device_of(const void* p) {
  const DriverAnswer a = ask_driver(p, false);
  return a.managed ? -1 : a.device;
}
void use_device(int) { unsupported("use_device"); }
int current_device() { unsupported("current_device"); }
DeviceBuffer::DeviceBuffer(size_t) { unsupported("DeviceBuffer"); }
DeviceBuffer::~DeviceBuffer() = default;
void DeviceBuffer::upload(const void*, size_t) { unsupported("upload"); }
void DeviceBuffer::download(void*, size_t) const { unsupported("download"); }
void DeviceBuffer::fill_bytes(int) { unsupported("fill_bytes"); }
void DeviceBuffer::fill_bytes(int, void*) { unsupported("fill_bytes"); }
PinnedBuffer::PinnedBuffer(size_t) { unsupported("PinnedBuffer"); }
PinnedBuffer::~PinnedBuffer() = default;
void synchronize(const char*) {}
void synchronize(void*, const char*) {}
void copy_device(void*, const void*, size_t, void*) { unsupported("copy_device"); }
void copy_to_device(void*, const void*, size_t) { unsupported("copy_to_device"); }
void copy_to_host(void*, const void*, size_t) { unsupported("copy_to_host"); }
double elapsed_ms_between_events(void (*)(void*), void*, int) { unsupported("timing"); }
void require_kernels_run_here() { unsupported("GPU kernels"); }
void update(const math::UpdateParams&, math::Step, float*, const float*, const float*, float*, size_t, void*) {
  unsupported("update");
}
void update_bf16(const math::UpdateParams&, math::Step, float*, const uint16_t*, const float*, float*, size_t, void*) {
  unsupported("update_bf16");
}
void compress_bf16(const float*, float*, uint16_t*, size_t, void*) { unsupported("compress_bf16"); }
void decompress_bf16(const uint16_t*, float*, size_t, void*) { unsupported("decompress_bf16"); }

struct StagingRing::Impl {};
StagingRing::StagingRing(size_t chunk_bytes, int depth) : chunk_bytes_(chunk_bytes), depth_(depth) {
  unsupported("StagingRing");
}
StagingRing::~StagingRing() = default;
void* StagingRing::buffer(int) const { unsupported("StagingRing::buffer"); }
void* StagingRing::stream() const { return nullptr; }
void StagingRing::copy_from_device(int, const void*, size_t) { unsupported("StagingRing::copy_from_device"); }
void StagingRing::wait(int) { unsupported("StagingRing::wait"); }
bool StagingRing::ready(int) { unsupported("StagingRing::ready"); }
void StagingRing::copy_to_device(void*, const void*, size_t) { unsupported("StagingRing::copy_to_device"); }

}  // namespace rdmaps::cuda
