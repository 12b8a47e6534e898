// The memory bound of a server's apply, measured: the same pass the server's
// threads make (the rule's update from a piece-sized gradient buffer, then
// the copy into the worker's backup), by the same number of threads, each on
// its own contiguous part of the parameters, as the lanes own theirs.
#pragma once

#include <cstdint>

#include "rdmaps/config.h"

namespace rdmaps::bench {

/// Seconds for `threads` threads to apply one push from each of `workers`
/// workers to `floats` parameters in `shard_floats` pieces and copy each
/// piece into that worker's backup (best of three passes).
double apply_bound_seconds(UpdateRule rule, uint64_t floats, uint32_t shard_floats, uint32_t workers, uint32_t threads);

}  // namespace rdmaps::bench
