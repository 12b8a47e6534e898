#include "src/ps/memory_plan.h"

#include "math/update_params.h"
#include "src/ps/protocol.h"

namespace rdmaps::ps {

using transport::size_text;

MemoryPlan server_memory_plan(uint64_t floats, uint32_t lanes, const Config& config, bool gpu_shard) {
  MemoryPlan p;
  const uint64_t range = floats * sizeof(float);
  const uint64_t table = range * (math::needs_state(config.rule) ? 2 : 1);
  p.shared = gpu_shard ? 0 : table;  // a GPU shard keeps parameters, state and DC backups in device memory
  // Each lane keeps the snapshot it copies for the writer (docs/cluster.md "Checkpoints").
  if (!config.checkpoint_dir.empty()) p.checkpoint = table;
  // The push path is chosen per worker; anything but shared memory may be
  // tcp, and a worker may ask for active messages (the server told so plans
  // for it; ServerImpl warns of one it did not plan for). Pulls put into a
  // worker's own memory over shared memory are emulated in UCX 1.13, and
  // such a worker gets a copy (ServerLane::needs_copy).
  p.copies = math::needs_backup(config.rule) || gpu_shard || config.transport != "shm" ||
             config.push_path == PushPath::kAm || config.put_landing == PutLanding::kOn;
  // For sure: not where it depends on the worker's transport (auto) or on
  // whether UCX puts into its registered memory (--put-landing on, shm).
  const bool copy_for_sure =
      math::needs_backup(config.rule) || gpu_shard || config.transport == "tcp" || config.push_path == PushPath::kAm;
  const uint64_t inboxes = uint64_t{lanes} * inbox_bytes(config);
  p.per_worker = inboxes + (p.copies ? range : 0);
  p.per_worker_least = inboxes + (copy_for_sure ? range : 0);
  return p;
}

uint64_t inbox_bytes(const Config& config) {
  const uint64_t bytes = SlotLayout{config.shard_floats * sizeof(float)}.slot_bytes() * config.inbox_slots;
  constexpr uint64_t kHugePage = uint64_t{2} << 20;
  if (config.transport == "shm" || bytes < kHugePage) return bytes;
  return (bytes + kHugePage - 1) / kHugePage * kHugePage;
}

MemoryBudget::MemoryBudget(uint64_t fixed, transport::AvailableMemory available, uint32_t workers)
    : fixed_(fixed), available_(std::move(available)), by_worker_(workers, 0), untouched_(workers, 0) {}

std::string MemoryBudget::refusal(uint32_t worker, uint64_t bytes, const transport::AvailableMemory& now) const {
  if (worker >= by_worker_.size()) return {};
  const std::string head = "this server has no memory for worker " + std::to_string(worker) + ": it needs " +
                           size_text(bytes) + " (its inboxes and copies of the range)";
  // First what this server promised, which names every part of its own.
  if (available_.bytes != 0) {
    const uint64_t others = promised_ - by_worker_[worker];
    if (fixed_ + others + bytes > available_.bytes) {
      uint32_t holding = 0;
      for (uint32_t w = 0; w < by_worker_.size(); ++w) holding += w != worker && by_worker_[w] != 0;
      return head + ", beside " + size_text(fixed_) + " for the parameters, their state and snapshot and " +
             size_text(others) + " for the " + std::to_string(holding) + " workers admitted, of the " +
             size_text(available_.bytes) + " available when its lanes started (" + available_.bound +
             "); admitted, it would be killed by the kernel mid-run. Spread the table over more servers (--servers), "
             "or run fewer workers";
    }
  }
  // Then what is available now, less the inboxes of those that have not
  // pushed yet: copies are faulted in as a worker is admitted, its inboxes
  // as it first pushes. It shows what other servers sharing this memory
  // took meanwhile (two in one 256 MiB cgroup each counted the other's part,
  // and one was killed; on a loaded machine, as the inboxes of workers
  // admitted before were written). And room for what UCX itself takes per
  // connection (its endpoints' buffers).
  constexpr uint64_t kHeadroom = uint64_t{4} << 20;
  const uint64_t pending = untouched_total_ - untouched_[worker];
  if (now.bytes == 0 || bytes + pending + kHeadroom <= now.bytes) return {};
  const std::string left = pending ? ", but of the " + size_text(now.bytes) + " available now (" + now.bound +
                                         ") the inboxes of workers admitted will take " + size_text(pending) +
                                         " as they push, leaving " +
                                         size_text(now.bytes > pending ? now.bytes - pending : 0)
                                   : ", but only " + size_text(now.bytes) + " is available now (" + now.bound + ")";
  return head + left +
         ": what this server holds is counted out of it, and other processes, another server among them, hold the "
         "rest. Spread the table over more servers (--servers) on more machines, or run fewer workers";
}

void MemoryBudget::promise(uint32_t worker, uint64_t bytes, uint64_t untouched) {
  if (worker >= by_worker_.size()) return;
  promised_ = promised_ - by_worker_[worker] + bytes;
  by_worker_[worker] = bytes;
  untouched_total_ = untouched_total_ - untouched_[worker] + untouched;
  untouched_[worker] = untouched;
}

void MemoryBudget::touched(uint32_t worker) {
  if (worker >= untouched_.size()) return;
  untouched_total_ -= untouched_[worker];
  untouched_[worker] = 0;
}

namespace {

// "(1.1 GB for the parameters and their state, ..., 9.4 MB per worker; dc-asgd-a keeps ...)": with
// `per_worker` a worker's part (the plan's, or the least one takes, without a copy it may not have).
std::string breakdown(const MemoryPlan& plan, uint64_t per_worker, UpdateRule rule) {
  std::string why;
  if (plan.copies && per_worker == plan.per_worker)
    why = std::string("; ") + (math::needs_backup(rule) ? std::string(rule_name(rule)) : "the write-back path") +
          " keeps a copy of this server's range for every worker" +
          (plan.per_worker_least < plan.per_worker ? " that comes over tcp or asks for one" : "");
  return "(" + (plan.shared ? size_text(plan.shared) + " for the parameters and their state, " : "") +
         (plan.checkpoint ? size_text(plan.checkpoint) + " for the snapshot checkpoints are written from, " : "") +
         size_text(per_worker) + " per worker" + why + ")";
}

}  // namespace

std::optional<std::string> memory_warning(const MemoryPlan& plan, uint64_t workers,
                                          const transport::AvailableMemory& memory, UpdateRule rule) {
  const uint64_t available = memory.bytes;
  const uint64_t need = plan.total(workers);
  if (available == 0 || need <= available) return std::nullopt;
  const uint64_t fit = available > plan.fixed() && plan.per_worker ? (available - plan.fixed()) / plan.per_worker : 0;
  return std::to_string(workers) + " workers need about " + size_text(need) + " of memory on this server " +
         breakdown(plan, plan.per_worker, rule) + ", but " + size_text(available) + " is available (" + memory.bound +
         "): past about " + std::to_string(fit) +
         " workers the next are refused, for now (admitted, the kernel would kill this server mid-run). Spread the "
         "table over more servers (--servers), or run fewer workers";
}

std::optional<std::string> memory_refusal(const MemoryPlan& plan, const transport::AvailableMemory& memory,
                                          UpdateRule rule) {
  // The least one worker takes: a copy that depends on its transport is
  // no reason to refuse a server (SGD over RDMA makes none).
  const uint64_t need = plan.fixed() + plan.per_worker_least;
  if (memory.bytes == 0 || need <= memory.bytes) return std::nullopt;
  return "this server's range and one worker need about " + size_text(need) + " of memory " +
         breakdown(plan, plan.per_worker_least, rule) + ", but " + size_text(memory.bytes) + " is available (" +
         memory.bound + "): not one worker fits. Spread the table over more servers (--servers)";
}

}  // namespace rdmaps::ps
