// Which shards of a lane hold, in a worker's DC backup, parameters that
// worker was sent. Before its first write-back of a shard the backup is
// zeros, and compensating against them (w - 0) is no delay at all: a push to
// such a shard is applied uncompensated, as ASGD (docs/architecture.md
// "Update rules"). Both shard stores keep one; set-up and the first pull of a
// shard only, a byte per worker and shard.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace rdmaps::ps {

class BackupCover {
 public:
  BackupCover(uint32_t workers, size_t floats, size_t shard_floats)
      : shard_floats_(shard_floats), shards_((floats + shard_floats - 1) / shard_floats), held_(workers * shards_, 0) {}

  /// A worker (re)joins: its backup holds nothing it was sent.
  void clear(uint32_t worker) { std::fill_n(held_.begin() + worker * shards_, shards_, 0); }

  /// Whether the backup holds what `worker` was sent for the shard of float `local`.
  bool holds(uint32_t worker, size_t local) const { return held_[worker * shards_ + local / shard_floats_] != 0; }

  /// A write-back of [local, local+n) to `worker`: each shard it touches for
  /// the first time is passed to `fill(begin, floats)` whole, so that the
  /// floats of it the worker did not pull are compensated against the
  /// parameters of now rather than zeros.
  template <typename Fill>
  void sent(uint32_t worker, size_t local, size_t n, size_t floats, Fill&& fill) {
    for (size_t s = local / shard_floats_; s * shard_floats_ < local + n; ++s) {
      uint8_t& held = held_[worker * shards_ + s];
      if (held) continue;
      const size_t begin = s * shard_floats_;
      fill(begin, std::min(shard_floats_, floats - begin));
      held = 1;
    }
  }

 private:
  size_t shard_floats_, shards_;
  std::vector<uint8_t> held_;
};

}  // namespace rdmaps::ps
