// How the parameter table (all declared tensors, concatenated) is split:
// contiguous ranges across servers, balanced by bytes, each cut into shards.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "src/ps/protocol.h"

namespace rdmaps::ps {

struct Range {
  uint64_t begin = 0, end = 0;
  uint64_t size() const { return end - begin; }
};

/// The part of `t` inside `r` (empty when begin >= end).
inline Range overlap(const Range& t, const Range& r) {
  return {t.begin > r.begin ? t.begin : r.begin, t.end < r.end ? t.end : r.end};
}

class Partition {
 public:
  Partition(std::vector<TensorDecl> tensors, uint32_t servers, uint32_t shard_floats);

  uint64_t total_floats() const { return total_; }
  uint32_t servers() const { return servers_; }
  uint32_t shard_floats() const { return shard_floats_; }
  const std::vector<TensorDecl>& tensors() const { return tensors_; }
  /// Global float range of a declared tensor; throws Error naming it and the
  /// call `op` ("push", "pull", ...) if unknown.
  Range tensor(const std::string& name, const char* op) const { return tensor(index(name, op)); }
  /// Index of a declared tensor in the table; throws as tensor(name, op).
  uint32_t index(const std::string& name, const char* op) const;
  Range tensor(uint32_t index) const { return {offsets_[index], offsets_[index] + tensors_[index].floats}; }
  /// Global float range server `s` owns.
  Range server_range(uint32_t s) const;
  /// Shards of server `s`: its range cut into shard_floats pieces.
  uint32_t shard_count(uint32_t s) const;
  Range shard(uint32_t s, uint32_t shard) const;  ///< global range
  /// Segments: each tensor cut at shard boundaries, numbered tensor by tensor
  /// in table order. A worker keeps the version of its copy per segment, since
  /// one shard may hold tensors it pulled at different times.
  uint64_t segments() const { return segments_; }
  /// The segment of tensor `index` in shard `shard` of server `s` (which it must touch).
  uint64_t segment(uint32_t index, uint32_t s, uint32_t shard) const {
    return segment_base_[index] + shards_before_[s] + shard;
  }

 private:
  std::vector<TensorDecl> tensors_;
  std::vector<uint64_t> offsets_;
  // Every push and pull looks its tensors up: a model of thousands of tensors
  // made a scan of them cost more than the data (docs/benchmarks.md, "Session 17").
  std::unordered_map<std::string, uint32_t> by_name_;
  std::vector<uint64_t> shards_before_;  // by server: the shards of the servers before it
  std::vector<uint64_t> segment_base_;   // by tensor: its first segment minus the table-wide number of its first shard
  uint64_t segments_ = 0;
  uint64_t total_ = 0;
  uint32_t servers_;
  uint32_t shard_floats_;
};

}  // namespace rdmaps::ps
