// A server's range of the table kept in GPU memory: parameters, optimizer
// state and each worker's DC backup, updated in one pass by the fused kernel
// (cuda/kernels.h), bf16 gradients widened in the same pass. The inbox and
// the write-back source stay in registered host memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "cuda/device_memory.h"
#include "src/update_rules.h"

namespace rdmaps::ps {

class GpuShard {
 public:
  GpuShard(size_t floats, size_t shard_floats, uint32_t workers, UpdateRule rule);

  void init(size_t local, const float* values, size_t n);
  /// `g`: n floats, or n bf16 values when `bf16`, in host memory (the inbox slot).
  void apply(const UpdateParams& p, Step step, uint32_t worker, size_t local, const void* g, bool bf16, size_t n);
  /// Copies [local, local+n) into `host` (the write-back source) and makes it
  /// the worker's backup for DC-ASGD.
  void snapshot(uint32_t worker, size_t local, size_t n, float* host);
  /// A (re)joining worker starts with a zero backup, as on the host.
  void reset_worker(uint32_t worker);

 private:
  float* backup(uint32_t worker);
  size_t floats_;
  bool dc_;
  cuda::DeviceBuffer params_;
  std::unique_ptr<cuda::DeviceBuffer> state_;
  cuda::DeviceBuffer gradient_;  // one piece, f32 or bf16
  std::vector<std::unique_ptr<cuda::DeviceBuffer>> backups_;
};

}  // namespace rdmaps::ps
