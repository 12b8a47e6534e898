// When a server checkpoints, and the thread that writes: the control thread
// asks every lane for a snapshot when one is due (by time or by updates),
// and once all are complete hands them to a writer thread, so neither the
// lanes nor admission wait for the disk (docs/cluster.md "Checkpoints").
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "src/ps/checkpoint.h"

namespace rdmaps::ps {

class ServerLane;

class Checkpointer {
 public:
  Checkpointer(const Config& config, bool verbose);
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  bool enabled() const { return !dir_.empty(); }
  /// Makes the directory and takes server `index`'s lock on it, held while
  /// this lives (CheckpointDirLock); throws naming --checkpoint-dir.
  void claim(uint32_t index);
  /// The lanes serve the table `base` describes from now on (the header
  /// fields that do not change); numbering goes on after `last_sequence` (a
  /// resumed one's, holding `resumed_updates`), whose `earlier_job` files stay kept.
  void start(const CheckpointHeader& base, uint64_t last_sequence, uint64_t earlier_job, uint64_t resumed_updates);
  /// The job id each checkpoint carries from now on (Admission::job).
  void set_job(uint64_t job) { job_.store(job, std::memory_order_relaxed); }
  /// Control thread, every turn: `updates` is the pushes taken in so far.
  /// A run that did not resume writes nothing before its first update: its
  /// table of zeros would outrank the directory's checkpoints at the next
  /// --resume, and its writes would prune them. A worker that left or was
  /// lost (the lanes' counters) is checkpointed within kAfterLeave, so that
  /// a resume does not wait for it: one taken before its leave holds it
  /// connected, and a server that died before the next periodic checkpoint
  /// came back waiting for a worker that had finished. At most one such
  /// checkpoint every kLeaveGap: workers ending one by one must not copy
  /// the model once each. Nothing is taken by time while no update was
  /// applied and no worker ended since the last one (resumed or written):
  /// identical copies pruned the distinct ones (--checkpoint-keep counted
  /// timer ticks; an idle server wrote 418 of them).
  void tick(const std::vector<std::unique_ptr<ServerLane>>& lanes, uint64_t updates);
  /// Long enough that workers ending together (a job's end) leave before
  /// it: finish() then writes the last checkpoint, and this one is not taken.
  static constexpr std::chrono::seconds kAfterLeave{2};
  static constexpr std::chrono::seconds kLeaveGap{30};
  /// After the lanes stopped: waits for a write in progress, then writes one
  /// last checkpoint (none where tick() would not have, nor where the newest
  /// already holds this model). Returns false when the last checkpoint could
  /// not be written. A model that holds a NaN or an infinity is never
  /// written (it pruned the last finite ones): that write fails, saying where.
  bool finish(const std::vector<std::unique_ptr<ServerLane>>& lanes, uint64_t updates);
  /// Returns once no write is in progress.
  void wait();
  /// After finish(): gives the directory up (claim()'s lock), for the next server of this process.
  void release() {
    wait();
    lock_.reset();
  }

  uint64_t written() const { return written_.load(std::memory_order_relaxed); }
  uint64_t failed() const { return failed_.load(std::memory_order_relaxed); }
  /// Pushes held by the newest checkpoint written.
  uint64_t last_updates() const { return last_updates_.load(std::memory_order_relaxed); }

 private:
  bool write(const std::vector<std::unique_ptr<ServerLane>>& lanes, uint64_t sequence);  // on any thread; false: failed
  /// A run that did not resume and applied no update: its table is not the job's.
  bool nothing_to_keep(uint64_t updates) const { return !resumed_ && updates == 0; }
  /// Nothing applied, no worker ended and no init taken (`changes` counts
  /// both) since the newest checkpoint (resumed, or asked for); a write that
  /// failed is tried again apart.
  bool unchanged_since_last(uint64_t updates, uint64_t changes) const {
    return (resumed_ || sequence_taken_) && updates == last_taken_updates_ && changes == last_taken_changes_;
  }

  std::string dir_;
  std::unique_ptr<CheckpointDirLock> lock_;
  uint64_t every_ms_, every_updates_;
  uint32_t keep_;
  bool verbose_;
  bool started_ = false, resumed_ = false;
  CheckpointHeader base_;
  uint64_t sequence_ = 0, pending_ = 0;  // pending_: snapshot asked for, not yet handed to the writer
  uint64_t earlier_job_ = 0;             // files up to it are an earlier job's: never pruned (saved in each file)
  std::vector<uint64_t> good_;           // sequences known intact: resumed from, written (the writer's, one at a time)
  std::chrono::steady_clock::time_point last_at_;
  uint64_t workers_ended_ = 0;                                        // the lanes' workers left and lost, as last seen
  std::optional<std::chrono::steady_clock::time_point> leave_due_;    // a snapshot owed to a worker's leave
  std::optional<std::chrono::steady_clock::time_point> leave_taken_;  // the last one taken for a leave
  uint64_t last_taken_updates_ = 0, last_taken_changes_ = 0;          // at the last snapshot asked for
  bool sequence_taken_ = false;                                       // a snapshot was asked for in this run
  bool failed_since_last_ = false;                                    // the writer's last write failed
  std::thread writer_;
  std::atomic<bool> writing_{false};
  std::atomic<uint64_t> written_{0}, failed_{0}, last_updates_{0};
  std::atomic<uint64_t> job_{0};  // set on the control thread, read by the writer
};

}  // namespace rdmaps::ps
