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

/// The calling thread's current GPU, which the shard goes to; throws
/// Error(kUnsupported) saying why where there is no CUDA device or it cannot
/// run this build's kernels.
int require_gpu();
/// As make_host_store, on GPU `device` (require_gpu()'s), whichever thread calls.
std::unique_ptr<ShardStore> make_gpu_store(int device, size_t floats, size_t shard_floats, uint32_t workers,
                                           UpdateRule rule);

}  // namespace rdmaps::ps
