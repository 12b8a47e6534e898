// The memory bound of a server's work, measured: the rule's update of every
// worker's push from a piece-sized gradient buffer (the inbox slot), then the
// copy of the parameters into every worker's backup that its pull makes
// (where the lane makes one: see ServerLane::write_back), by the same number
// of threads, each on its own contiguous part, as the lanes own theirs.
#pragma once

#include <cstdint>

#include "math/update_params.h"

namespace rdmaps::bench {

/// Seconds for `threads` threads to apply one push from each of `workers`
/// workers to `floats` parameters in `shard_floats` pieces, then, with
/// `backup_copy`, copy the parameters into each worker's backup (best of three
/// passes), with the rule and parameters the servers run (`p`). With `bf16`,
/// each piece arrives as bf16 and is widened first, as a lane does.
double apply_bound_seconds(const math::UpdateParams& p, uint64_t floats, uint32_t shard_floats, uint32_t workers,
                           uint32_t threads, bool backup_copy, bool bf16 = false);

/// Seconds for one thread to encode `floats` gradient floats as bf16 with
/// error feedback, as a worker does before its push (best of three).
double encode_bf16_seconds(uint64_t floats);

}  // namespace rdmaps::bench
