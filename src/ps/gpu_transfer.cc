#include "src/ps/gpu_transfer.h"

#include <algorithm>

#include "cuda/kernels.h"
#include "rdmaps/error.h"

namespace rdmaps::ps {

int staging_depth_for(size_t chunk_bytes) {
  constexpr size_t kInFlight = 8u << 20;
  const size_t chunks = (kInFlight + chunk_bytes - 1) / std::max<size_t>(chunk_bytes, 1);
  return static_cast<int>(std::clamp<size_t>(chunks, 3, 64));
}

GpuTransfer::GpuTransfer(int device, const transport::MemorySupport& transport, size_t chunk_bytes,
                         uint64_t total_floats, uint32_t staging_depth, GpuPathChoice choice, uint64_t largest_tensor)
    : device_(device), total_floats_(total_floats), largest_tensor_(largest_tensor) {
  path_ = choose_gpu_path(transport, 1, &reason_, choice);
  cuda::use_device(device_);
  // The ring also serves pulls into device memory on either path.
  ring_ = std::make_unique<cuda::StagingRing>(
      chunk_bytes, staging_depth ? static_cast<int>(staging_depth) : staging_depth_for(chunk_bytes));
}

const void* GpuTransfer::prepare(const float* src, uint64_t at, size_t n, bool bf16) {
  cuda::use_device(device_);
  if (!bf16) return src;
  if (!residual_) {
    // f32 pushes only copy; bf16 ones encode on the device, which a GPU older
    // than the build's oldest architecture cannot: said by name, before any piece goes.
    cuda::require_kernels_run_here();
    residual_ = std::make_unique<cuda::DeviceBuffer>(total_floats_ * sizeof(float));
    // On the ring's stream, where the encodings run after it: on the legacy
    // stream, which the ring's non-blocking one does not wait for, the first
    // encoding read what the allocation held, and a device-wide wait for it
    // held the first push until the backward's queued kernels had all run.
    residual_->fill_bytes(0, ring_->stream());
  }
  // The largest tensor's worth at once (a push encodes a whole tensor):
  // growing it freed the old one, and cudaFree waits for the whole device.
  if (!wire_ || wire_->size() < n * sizeof(uint16_t))
    wire_ = std::make_unique<cuda::DeviceBuffer>(std::max<size_t>(n, largest_tensor_) * sizeof(uint16_t));
  auto* wire = static_cast<uint16_t*>(wire_->data());
  cuda::compress_bf16(src, static_cast<float*>(residual_->data()) + at, wire, n, ring_->stream());
  // UCX reads it right away; the device's other work (the rest of the backward) need not end first.
  if (path_ == GpuPath::kDirect) cuda::synchronize(ring_->stream(), "the bf16 encoding kernel of a push");
  return wire;
}

void GpuTransfer::to_device(void* dst, const void* host, size_t bytes) {
  cuda::use_device(device_);
  ring_->copy_to_device(dst, host, bytes);
}

}  // namespace rdmaps::ps
