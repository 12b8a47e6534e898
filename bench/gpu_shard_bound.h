// The bound of a GPU shard's own work, measured: what ServerLane does per push
// and pull when the range lives on the GPU (src/ps/gpu_shard.cc), each step
// timed on this run's device at the model's size.
#pragma once

#include <cstdint>

#include "math/update_params.h"

namespace rdmaps::bench {

/// Seconds for one push and one pull of each of `workers` workers over
/// `floats` parameters on the GPU shard: the gradient from (pageable) host
/// memory to the device, the fused update, the parameters back to host memory
/// and, for a DC rule, into the worker's backup on the device (each the mean
/// of three runs after a warm one), with the rule and parameters the server
/// runs (`params`). Throws kUnsupported where no CUDA device is.
double gpu_shard_bound_seconds(const math::UpdateParams& params, uint64_t floats, uint32_t workers);

}  // namespace rdmaps::bench
