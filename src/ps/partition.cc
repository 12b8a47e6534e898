#include "src/ps/partition.h"

#include <algorithm>

#include "rdmaps/error.h"

namespace rdmaps::ps {

Partition::Partition(std::vector<TensorDecl> tensors, uint32_t servers, uint32_t shard_floats)
    : tensors_(std::move(tensors)), servers_(servers), shard_floats_(shard_floats) {
  if (servers_ == 0) throw Error(Errc::kInvalidArgument, "a parameter table needs at least one server");
  if (shard_floats_ == 0) throw Error(Errc::kInvalidArgument, "shard size must be at least one float");
  by_name_.reserve(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    offsets_.push_back(total_);
    total_ += tensors_[i].floats;
    by_name_.emplace(tensors_[i].name, static_cast<uint32_t>(i));  // the first of a name, as a scan found it
  }
  if (total_ < servers_)
    throw Error(Errc::kInvalidArgument, "table of " + std::to_string(total_) + " floats cannot be split across " +
                                            std::to_string(servers_) + " servers");
  // Shard indices are 32-bit on the wire; the first server holds the most.
  const uint64_t shards = (server_range(0).size() + shard_floats_ - 1) / shard_floats_;
  if (shards > kMaxShardsPerServer)
    throw Error(Errc::kInvalidArgument, "a table of " + std::to_string(total_) + " floats on " +
                                            std::to_string(servers_) + " server(s) in shards of " +
                                            std::to_string(shard_floats_) + " floats makes " + std::to_string(shards) +
                                            " shards per server, more than " + std::to_string(kMaxShardsPerServer) +
                                            ": raise --shard-floats");
  uint64_t before = 0;
  for (uint32_t s = 0; s < servers_; ++s) {
    shards_before_.push_back(before);
    before += shard_count(s);
  }
  // A float's shard, numbered across the table: its server's, after the shards of the servers before it.
  const uint64_t base = total_ / servers_, extra = total_ % servers_;
  const auto table_shard = [&](uint64_t pos) {
    const uint64_t s = pos < extra * (base + 1) ? pos / (base + 1) : extra + (pos - extra * (base + 1)) / base;
    return shards_before_[s] + (pos - server_range(static_cast<uint32_t>(s)).begin) / shard_floats_;
  };
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Range t = tensor(static_cast<uint32_t>(i));
    if (t.size() == 0) {  // declare() refuses one; no segment to number
      segment_base_.push_back(0);
      continue;
    }
    const uint64_t first = table_shard(t.begin);
    segment_base_.push_back(segments_ - first);  // wraps below zero; segment() wraps it back
    segments_ += table_shard(t.end - 1) - first + 1;
  }
}

uint32_t Partition::index(const std::string& name, const char* op) const {
  const auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    // The call and a few declared names: a typo or a prefix ("module.") shows at a glance.
    std::string known;
    for (size_t i = 0; i < tensors_.size() && i < 4; ++i) known += (i ? ", '" : "'") + tensors_[i].name + "'";
    if (tensors_.size() > 4) known += ", ... (" + std::to_string(tensors_.size()) + " in all)";
    throw Error(Errc::kInvalidArgument,
                std::string(op) + " of '" + name + "': no tensor of that name was declared; declared: " + known);
  }
  return it->second;
}

Range Partition::server_range(uint32_t s) const {
  // Equal byte shares; the first (total % servers) servers take one float more.
  uint64_t base = total_ / servers_, extra = total_ % servers_;
  uint64_t begin = s * base + std::min<uint64_t>(s, extra);
  return {begin, begin + base + (s < extra ? 1 : 0)};
}

uint32_t Partition::shard_count(uint32_t s) const {
  return static_cast<uint32_t>((server_range(s).size() + shard_floats_ - 1) / shard_floats_);
}

Range Partition::shard(uint32_t s, uint32_t k) const {
  Range r = server_range(s);
  uint64_t begin = r.begin + uint64_t{k} * shard_floats_;
  return {begin, std::min(r.end, begin + shard_floats_)};
}

}  // namespace rdmaps::ps
