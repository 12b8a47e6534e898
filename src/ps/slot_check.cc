#include "src/ps/slot_check.h"

#include <cmath>

namespace rdmaps::ps {

std::string check_slot(const SlotHeader& h, const SlotRules& r) {
  using std::to_string;
  if (h.magic != kSlotMagic) return "bad magic";
  if (h.worker != r.worker) return "header claims worker " + to_string(h.worker);
  if (h.seq != r.expected_seq) return "sequence " + to_string(h.seq) + ", expected " + to_string(r.expected_seq);
  if (h.flags & ~(kFlagBf16 | kFlagWorkerRate)) return "unknown header flags " + to_string(h.flags);
  const bool bf16 = h.flags & kFlagBf16, rate = h.flags & kFlagWorkerRate;
  if (bf16 && h.type != static_cast<uint16_t>(MsgType::kPush)) return "a bf16 payload in a message other than a push";
  if ((rate || h.learning_rate != 0) && h.type != static_cast<uint16_t>(MsgType::kPush))
    return "a learning rate in a message other than a push";
  const bool names_landing =
      h.type == static_cast<uint16_t>(MsgType::kPull) || h.type == static_cast<uint16_t>(MsgType::kLanding);
  if ((h.landing || h.landing_offset) && !names_landing) return "a landing region in a message other than a pull";
  const uint32_t first = r.first_shard, end = r.end_shard;
  // Made for a refusal only: every message paid for it (hot-path review).
  const auto lane = [&] { return "this lane's [" + to_string(first) + ", " + to_string(end) + ")"; };
  switch (static_cast<MsgType>(h.type)) {
    case MsgType::kPush:
    case MsgType::kInit: {
      if (h.shard < first || h.shard >= end) return "shard " + to_string(h.shard) + " is not one of " + lane();
      const Range shard = r.partition->shard(r.server, h.shard);
      if (h.length == 0 || h.offset > shard.size() || h.length > shard.size() - h.offset)
        return "floats [" + to_string(h.offset) + ", +" + to_string(h.length) + ") outside shard " +
               to_string(h.shard) + " of " + to_string(shard.size());
      const uint64_t version = r.versions[h.shard - first];
      if (h.type == static_cast<uint16_t>(MsgType::kPush) && h.base_version > version)
        return "base version " + to_string(h.base_version) + " is ahead of shard " + to_string(h.shard) + " (" +
               to_string(version) + ")";
      // More of a step the shard's version counted already: its staleness is
      // version - 1 - base, which a base the step itself reached would make
      // negative (it wrapped to 2^64-1). A worker's gradient predates its
      // step's pieces, since a pull of the shard ends the step.
      const size_t k = h.shard - first;
      if (h.type == static_cast<uint16_t>(MsgType::kPush) && k < r.stepped.size() &&
          r.stepped[k].continued_by(r.worker_step, h.offset, h.offset + h.length) && h.base_version >= version)
        return "base version " + to_string(h.base_version) + " of a piece continuing a step that itself moved shard " +
               to_string(h.shard) + " to version " + to_string(version) + " (its gradient must predate the step)";
      if (!(std::isfinite(h.learning_rate) && h.learning_rate >= 0))
        return "learning rate " + to_string(h.learning_rate) + " in a push";
      if (!rate && h.learning_rate != 0)
        return "learning rate " + to_string(h.learning_rate) + " in a push that does not flag a worker's rate";
      return {};
    }
    case MsgType::kPull: {
      if (h.length == 0 || h.shard < first || h.shard >= end || h.length > end - h.shard)
        return "pull of shards [" + to_string(h.shard) + ", +" + to_string(h.length) + ") outside " + lane();
      // offset: first float in the first shard; base_version: how many (0: to the end).
      const Range from = r.partition->shard(r.server, h.shard);
      const uint64_t there = r.partition->shard(r.server, h.shard + h.length - 1).end - from.begin;
      if (h.offset >= from.size() || h.base_version > there - h.offset)
        return "pull of floats [" + to_string(h.offset) + ", +" + to_string(h.base_version) + ") outside shards [" +
               to_string(h.shard) + ", +" + to_string(h.length) + ") of " + to_string(there) + " floats";
      if (h.landing == 0) return h.landing_offset ? "a landing offset without a landing region" : std::string();
      if (h.landing > r.landing_bytes.size())
        return "pull into landing region " + to_string(h.landing) + " of the worker's " +
               to_string(r.landing_bytes.size());
      const uint64_t bytes = (h.base_version ? h.base_version : there - h.offset) * sizeof(float);
      const uint64_t size = r.landing_bytes[h.landing - 1];
      if (h.landing_offset > size || bytes > size - h.landing_offset)
        return "pull of " + to_string(bytes) + " bytes at byte " + to_string(h.landing_offset) + " of landing region " +
               to_string(h.landing) + " of " + to_string(size) + " bytes";
      return {};
    }
    case MsgType::kClock:
      // Not past the last clock there is: from a LaneHello's 2^64-1, clock 0
      // passed as the next one, and the lane's minimum clock went back.
      if (r.worker_clock == UINT64_MAX || h.clock != r.worker_clock + 1)
        return "clock " + to_string(h.clock) + " after " + to_string(r.worker_clock);
      return {};
    case MsgType::kBye:
      return {};
    case MsgType::kLanding:
      if (!r.puts) return "a landing region offered on the active-message path, where the worker places pulls itself";
      if (h.shard || h.offset || h.base_version || h.landing_offset)
        return "a landing region offer with shard, offset, version or landing offset set";
      if (h.landing != r.landing_bytes.size() + 1)
        return "landing region " + to_string(h.landing) + " offered, the worker's next is " +
               to_string(r.landing_bytes.size() + 1);
      if (r.landing_bytes.size() >= kMaxLandingRegions)
        return "landing region " + to_string(h.landing) + " offered, at most " + to_string(kMaxLandingRegions);
      if (h.length == 0 || h.length > r.payload_bytes)
        return "landing region descriptor of " + to_string(h.length) + " bytes in a slot of " +
               to_string(r.payload_bytes);
      return {};
  }
  return "unknown message type " + to_string(h.type);
}

}  // namespace rdmaps::ps
