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
#include <vector>

#include "rdmaps/config.h"
#include "transport/memory_limit.h"

namespace rdmaps::ps {

struct MemoryPlan {
  uint64_t shared = 0;      ///< parameters and the rule's state
  uint64_t checkpoint = 0;  ///< with checkpoints: the snapshot they are written from (as much again)
  uint64_t per_worker = 0;  ///< its inboxes and its copy of the range
  bool copies = false;      ///< whether each worker may have a copy of the range
  /// Per worker for sure: without a copy that depends on how it connects
  /// (transport auto: none over RDMA or shared memory, one over tcp).
  uint64_t per_worker_least = 0;
  uint64_t fixed() const { return shared + checkpoint; }
  uint64_t total(uint64_t workers) const { return fixed() + workers * per_worker; }
};

/// For a server range of `floats` on `lanes` lanes under `config`.
MemoryPlan server_memory_plan(uint64_t floats, uint32_t lanes, const Config& config, bool gpu_shard);

/// One lane's inbox for one worker: its slots, rounded up to whole 2 MiB
/// where UCX may back it with huge pages (all but shared memory): over tcp
/// 4 slots of 1 MiB and 192 bytes took 6 MiB, and a plan of 4 MiB let the
/// kernel kill a server it said had room.
uint64_t inbox_bytes(const Config& config);

/// What a server promised its workers (their inboxes and copies) against
/// the memory it had when its lanes started: past it, a worker is refused,
/// for now, where an overcommitting kernel granted its memory and killed
/// the server as the pages were touched (33 of 64 workers admitted in
/// 250 MB, then SIGKILL).
class MemoryBudget {
 public:
  MemoryBudget() = default;
  /// `fixed`: the parameters, state and snapshot; `available` when they were not yet made.
  MemoryBudget(uint64_t fixed, transport::AvailableMemory available, uint32_t workers);
  /// Why worker `worker`, needing `bytes`, does not fit beside what the
  /// others were promised, or in what is available `now` less what admitted
  /// workers will still touch (other servers of the machine or cgroup take
  /// their part meanwhile); "" where it does, or where memory is unknown.
  std::string refusal(uint32_t worker, uint64_t bytes, const transport::AvailableMemory& now) const;
  /// Records what `worker` holds now, `untouched` of it not yet written
  /// (its inboxes, until it pushes); a rejoining id's new memory replaces
  /// its old; 0: it left, or never reached a lane.
  void promise(uint32_t worker, uint64_t bytes, uint64_t untouched = 0);
  /// `worker` wrote its memory (it pushed): what is available shows it now.
  void touched(uint32_t worker);
  bool holds(uint32_t worker) const { return worker < by_worker_.size() && by_worker_[worker] != 0; }
  bool untouched(uint32_t worker) const { return worker < untouched_.size() && untouched_[worker] != 0; }

 private:
  uint64_t fixed_ = 0, promised_ = 0, untouched_total_ = 0;
  transport::AvailableMemory available_;
  std::vector<uint64_t> by_worker_, untouched_;
};

/// What to tell the user when `workers` workers need more than is available
/// (0 bytes: unknown, say nothing), or nothing.
std::optional<std::string> memory_warning(const MemoryPlan& plan, uint64_t workers,
                                          const transport::AvailableMemory& available, UpdateRule rule);

/// Why this server cannot serve even one worker in the memory available, or
/// nothing: such a server is refused before it allocates anything.
std::optional<std::string> memory_refusal(const MemoryPlan& plan, const transport::AvailableMemory& available,
                                          UpdateRule rule);

}  // namespace rdmaps::ps
