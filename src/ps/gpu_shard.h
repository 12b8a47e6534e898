// A lane's range of the table kept in GPU memory: parameters, optimizer state
// and each worker's DC backup, updated in one pass by the fused kernel
// (cuda/kernels.h), bf16 gradients widened in the same pass. The inbox and
// the write-back source (the worker's copy) stay in registered host memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "src/ps/shard_store.h"

namespace rdmaps::ps {

/// Throws Error(kUnsupported) saying why where no CUDA device is.
void require_gpu();
/// As make_host_store, on the GPU; require_gpu() first.
std::unique_ptr<ShardStore> make_gpu_store(size_t floats, size_t shard_floats, uint32_t workers, UpdateRule rule);

}  // namespace rdmaps::ps
