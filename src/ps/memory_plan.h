// Host memory a server needs: its range and the rule's state once, and for
// every worker an inbox per lane plus, where delay compensation keeps a
// backup or the write-back path copies (tcp, a GPU shard), a copy of the
// range; with checkpoints, a snapshot of the parameters and state. With many
// workers and a large model the copies dominate: 64 workers
// of a 1 GiB range under DC-ASGD need 64 GiB, and an overcommitting kernel
// grants that at admission and kills the server later, mid-run.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "rdmaps/config.h"
#include "transport/memory_limit.h"

namespace rdmaps::ps {

struct MemoryPlan {
  uint64_t shared = 0;      ///< parameters and the rule's state
  uint64_t checkpoint = 0;  ///< with checkpoints: the snapshot they are written from (as much again)
  uint64_t per_worker = 0;  ///< its inboxes and its copy of the range
  bool copies = false;      ///< whether each worker has a copy of the range
  uint64_t fixed() const { return shared + checkpoint; }
  uint64_t total(uint64_t workers) const { return fixed() + workers * per_worker; }
};

/// For a server range of `floats` on `lanes` lanes under `config`.
MemoryPlan server_memory_plan(uint64_t floats, uint32_t lanes, const Config& config, bool gpu_shard);

/// What to tell the user when `workers` workers need more than is available
/// (0 bytes: unknown, say nothing), or nothing.
std::optional<std::string> memory_warning(const MemoryPlan& plan, uint64_t workers,
                                          const transport::AvailableMemory& available, UpdateRule rule);

/// Why this server cannot serve even one worker in the memory available, or
/// nothing: such a server is refused before it allocates anything.
std::optional<std::string> memory_refusal(const MemoryPlan& plan, const transport::AvailableMemory& available,
                                          UpdateRule rule);

}  // namespace rdmaps::ps
