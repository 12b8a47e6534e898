// How a worker sends from and receives into GPU memory. The path is chosen
// once from UCX's capabilities (src/api/capabilities.h): device pointers go to UCX
// directly, or through a ring of pinned host buffers whose device-to-host
// copies overlap the sends. bf16 encoding of device gradients runs on the GPU
// with the error-feedback residual kept there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "cuda/device_memory.h"
#include "cuda/staging.h"
#include "src/api/capabilities.h"

namespace rdmaps::ps {

/// Chunks in the staged path's ring when not told: enough for 8 MiB, at
/// least 3 (a quarter copied ahead, the rest sends in flight: staged_pipeline.h). A send over tcp (or RC) completes
/// locally only once its bytes left, so a ring of 3 x 1 MiB let the socket run dry between sends: the staged tcp push
/// reached 0.73 of the pinned-host one on an H200 host, whose host path has every piece in flight (docs/benchmarks.md).
/// shm completes at the copy and gains nothing past 3. `--staging-depth` overrides it.
int staging_depth_for(size_t chunk_bytes);

class GpuTransfer {
 public:
  /// device: the GPU of the worker's tensors, where the ring's stream, the
  /// residual and the bf16 buffer live and the calls' work goes, whichever
  /// GPU is current on the calling thread (rdmaps.torch's communication
  /// thread starts on GPU 0); transport: what the worker's live context
  /// moves; chunk_bytes: one piece (a shard) in float32; total_floats: the
  /// whole table; staging_depth: pinned chunks in the ring (0: staging_depth_for()).
  GpuTransfer(int device, const transport::MemorySupport& transport, size_t chunk_bytes, uint64_t total_floats,
              uint32_t staging_depth = 0, GpuPathChoice choice = GpuPathChoice::kAuto, uint64_t largest_tensor = 0);

  int device() const { return device_; }
  GpuPath path() const { return path_; }
  const std::string& reason() const { return reason_; }

  /// The device bytes to send for `n` floats at `src` (table offset `at`):
  /// src itself, or its bf16 encoding (residual updated). Ready when this returns
  /// on the direct path; queued ahead of the ring's copies on the staged path.
  /// Makes the transfer's GPU current on this thread for the ring's calls after it.
  const void* prepare(const float* src, uint64_t at, size_t n, bool bf16);
  cuda::StagingRing& ring() { return *ring_; }
  /// Host to device, waiting (write-back into GPU parameters).
  void to_device(void* dst, const void* host, size_t bytes);

 private:
  int device_;
  GpuPath path_;
  std::string reason_;
  uint64_t total_floats_;
  std::unique_ptr<cuda::StagingRing> ring_;
  std::unique_ptr<cuda::DeviceBuffer> residual_, wire_;
  uint64_t largest_tensor_;  // floats: what one bf16 encoding may need
};

}  // namespace rdmaps::ps
