// What a lane accepts in an inbox slot's header, decided before any field is
// used: a pure function of the header and the lane's state, so every rule is
// tested (and fuzzed) without a server (docs/protocol.md "Inbox").
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "src/ps/partition.h"
#include "src/ps/protocol.h"
#include "src/ps/step_cover.h"

namespace rdmaps::ps {

struct SlotRules {
  uint32_t worker = 0;        ///< whose inbox the slot is in
  uint64_t expected_seq = 0;  ///< the next message number due from that worker
  uint64_t worker_clock = 0;  ///< that worker's clock on this lane
  const Partition* partition = nullptr;
  uint32_t server = 0;                      ///< this server's index
  uint32_t first_shard = 0, end_shard = 0;  ///< this lane's shards, [first, end) of the server's
  const uint64_t* versions = nullptr;       ///< of this lane's shards
  uint64_t worker_step = 0;                 ///< that worker's step on this lane (+1 per clock)
  std::span<const StepCover> stepped;  ///< what its step covered, by shard of the lane; empty before its first push
  std::span<const uint64_t> landing_bytes;  ///< sizes of the worker's landing regions, in order
  bool puts = false;                        ///< the worker's pulls come back by put: it may offer landing regions
  size_t payload_bytes = 0;                 ///< what a slot's payload holds
};

/// Empty when the header may be acted on, else why not (goes to the worker's
/// rejected count and the log). Accepted pushes and inits lie inside one of
/// this lane's shards, and a push's base version is behind the version its
/// step left the shard at; accepted pulls name only this lane's shards, and a
/// pull that lands in a landing region fits in it; a landing region offered
/// after connecting is the next one, on the put path, its descriptor in the slot.
std::string check_slot(const SlotHeader& h, const SlotRules& r);

}  // namespace rdmaps::ps
