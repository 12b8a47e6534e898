// Which shards of a lane hold, in a worker's DC backup, parameters that
// worker was sent. Before its first write-back of a shard the backup is
// zeros, and compensating against them (w - 0) is no delay at all: a push to
// such a shard is applied uncompensated, as ASGD (docs/architecture.md
// "Update rules"). Both shard stores keep one for the DC rules; a bit per
// shard of each worker, made when the worker joins (a 32nd of a shard's
// floats, beside its copy of the range), read per push.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace rdmaps::ps {

class BackupCover {
 public:
  BackupCover(uint32_t workers, size_t floats, size_t shard_floats)
      : floats_(floats),
        shard_floats_(shard_floats),
        shards_((floats + shard_floats - 1) / shard_floats),
        held_(workers) {}

  /// A worker (re)joins: its backup holds nothing it was sent.
  void clear(uint32_t worker) { held_.at(worker).assign(shards_, false); }

  /// Whether the backup holds what `worker` was sent for the shard of float `local`.
  bool holds(uint32_t worker, size_t local) const { return held_[worker][local / shard_floats_]; }

  /// A write-back of [local, local+n) to `worker`: each shard it touches for
  /// the first time is passed to `fill(begin, floats)` whole, so that the
  /// floats of it the worker did not pull are compensated against the
  /// parameters of now rather than zeros.
  template <typename Fill>
  void sent(uint32_t worker, size_t local, size_t n, Fill&& fill) {
    std::vector<bool>& held = held_[worker];
    for (size_t s = local / shard_floats_; s * shard_floats_ < local + n; ++s) {
      if (held[s]) continue;
      const size_t begin = s * shard_floats_;
      fill(begin, std::min(shard_floats_, floats_ - begin));
      held[s] = true;
    }
  }

 private:
  size_t floats_, shard_floats_, shards_;
  std::vector<std::vector<bool>> held_;  // by worker: empty until it joins
};

}  // namespace rdmaps::ps
