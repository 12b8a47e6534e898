// Pipelined copies between device memory and pinned host buffers, for GPU
// gradients where UCX cannot take device pointers: chunk k is copied
// device-to-host on a stream of its own, an event marks it done, and the
// caller sends it while chunk k+1 is copied. A CPU build throws kUnsupported.
#pragma once

#include <cstddef>
#include <memory>

namespace rdmaps::cuda {

class StagingRing {
 public:
  /// `depth` pinned buffers of `chunk_bytes` (1-4 MiB, 2-4 deep is enough to
  /// overlap copy and send on PCIe and InfiniBand).
  StagingRing(size_t chunk_bytes, int depth);
  ~StagingRing();
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;

  int depth() const { return depth_; }
  size_t chunk_bytes() const { return chunk_bytes_; }
  void* buffer(int k) const;
  /// Queues the copy of `bytes` from device memory into buffer k.
  void copy_from_device(int k, const void* device_src, size_t bytes);
  /// Blocks until buffer k's copy finished.
  void wait(int k);
  /// Whether buffer k's copy finished, without waiting (a sender polls it
  /// while driving its network progress).
  bool ready(int k);
  /// Copies host data to device memory and waits (write-back into GPU parameters).
  void copy_to_device(void* device_dst, const void* host_src, size_t bytes);
  /// The stream this ring copies on (a cudaStream_t), for kernels that feed it.
  void* stream() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  size_t chunk_bytes_;
  int depth_;
};

}  // namespace rdmaps::cuda
