#include "src/ps/checkpointer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "src/ps/server_lane.h"

namespace rdmaps::ps {

using Clock = std::chrono::steady_clock;

Checkpointer::Checkpointer(const Config& config, bool verbose)
    : dir_(config.checkpoint_dir),
      every_ms_(config.checkpoint_every_ms),
      every_updates_(config.checkpoint_every_updates),
      keep_(config.checkpoint_keep),
      verbose_(verbose) {}

Checkpointer::~Checkpointer() { wait(); }

void Checkpointer::claim(uint32_t index) {
  check_checkpoint_dir(dir_);
  lock_ = std::make_unique<CheckpointDirLock>(dir_, index);
}

namespace {

// What changed a checkpoint besides updates, over the lanes: init messages
// (Python's broadcast_parameters after a resume sets every value before any
// push), and workers' clocks, leaves and deaths as each lane took them (a
// lane's snapshot taken before it took a worker's last clock, while lane 0
// had taken its leave, was the newest: the final checkpoint, seeing nothing
// new, was not written, and the worker was saved a clock behind).
uint64_t changes_taken(const std::vector<std::unique_ptr<ServerLane>>& lanes) {
  uint64_t changes = 0;
  for (const auto& lane : lanes) {
    const LaneCounters& c = lane->counters();
    changes += c.inits.load(std::memory_order_relaxed) + c.worker_events.load(std::memory_order_relaxed);
  }
  return changes;
}

// Workers that left or were lost, over the lanes.
uint64_t workers_ended(const std::vector<std::unique_ptr<ServerLane>>& lanes) {
  uint64_t ended = 0;
  for (const auto& lane : lanes) {
    const LaneCounters& c = lane->counters();
    ended += c.workers_left.load(std::memory_order_relaxed) + c.workers_lost.load(std::memory_order_relaxed);
  }
  return ended;
}

// "" or where `floats` holds its first NaN or infinity.
std::string first_non_finite(std::span<const float> floats, const char* what, size_t lane) {
  const auto bad = std::find_if(floats.begin(), floats.end(), [](float v) { return !std::isfinite(v); });
  if (bad == floats.end()) return "";
  return std::string(std::isnan(*bad) ? "NaN" : "an infinity") + " in lane " + std::to_string(lane) + "'s " + what +
         " at float " + std::to_string(bad - floats.begin());
}

}  // namespace

void Checkpointer::start(const CheckpointHeader& base, uint64_t last_sequence, uint64_t earlier_job,
                         uint64_t resumed_updates) {
  base_ = base;
  if (last_sequence) last_updates_.store(resumed_updates, std::memory_order_relaxed);
  sequence_ = last_sequence;
  // Carried by every checkpoint: a restart with --resume after a run without
  // it pruned the earlier job's files that run had promised to keep. Below
  // the one resumed (one copied to a lower name keeps its number inside, and
  // the files written after it read as damaged).
  earlier_job_ = last_sequence ? std::min(earlier_job, last_sequence - 1) : 0;
  resumed_ = last_sequence != 0;
  if (last_sequence) good_.push_back(last_sequence);
  // Files numbered past the one resumed from (unreadable ones, or an earlier
  // job's in a run without --resume) would outrank this run's checkpoints:
  // pruning keeps the highest numbers, and a write could replace them.
  if (const uint64_t on_disk = enabled() ? newest_checkpoint_sequence(dir_, base.index) : 0; on_disk > sequence_) {
    // Unreadable ones are replaced; without --resume they are an earlier
    // job's model (most likely a restart that left the flag out): kept.
    // Said as it happens: "replace them" left a damaged file in place, and "restart with --resume to go on
    // from them" resumed this run's model once it had written one.
    const std::string then =
        last_sequence
            ? ", and prunes them once it has written --checkpoint-keep (" + std::to_string(keep_) + ") newer ones"
            : ", and it keeps those, never pruned: the earlier job's model. A --resume goes on from the newest, this "
              "run's once it wrote one: to go on from those, restart with --resume before this run applies an "
              "update, or move this run's files away";
    logf(LogLevel::kWarn,
         "rdmaps-server: %s holds checkpoints of server %u up to %llu that this run did not resume from (%s); its "
         "checkpoints are numbered from %llu%s",
         dir_.c_str(), base.index, static_cast<unsigned long long>(on_disk),
         last_sequence ? "unreadable" : "no --resume", static_cast<unsigned long long>(on_disk + 1), then.c_str());
    if (!last_sequence) earlier_job_ = on_disk;
    sequence_ = on_disk;
  }
  last_at_ = Clock::now();
  started_ = true;
}

void Checkpointer::wait() {
  if (writer_.joinable()) writer_.join();
}

void Checkpointer::tick(const std::vector<std::unique_ptr<ServerLane>>& lanes, uint64_t updates) {
  if (!enabled() || !started_ || lanes.empty()) return;
  const uint64_t ended = workers_ended(lanes);
  if (ended != workers_ended_ && !leave_due_) {
    leave_due_ = Clock::now() + kAfterLeave;
    if (leave_taken_) leave_due_ = std::max(*leave_due_, *leave_taken_ + kLeaveGap);
  }
  workers_ended_ = ended;
  if (writing_.load(std::memory_order_acquire)) return;
  wait();
  if (pending_) {
    for (const auto& lane : lanes)
      if (!lane->snapshot_ready(pending_)) return;
    writing_.store(true, std::memory_order_release);
    writer_ = std::thread([this, &lanes, sequence = pending_] {
      write(lanes, sequence);
      writing_.store(false, std::memory_order_release);
    });
    pending_ = 0;
    return;
  }
  if (nothing_to_keep(updates)) {
    leave_due_.reset();  // a leave before any update: nothing to save for it
    return;
  }
  const auto now = Clock::now();
  // A write that failed is tried again each period, changed or not (a full disk freed while the workers stall).
  const uint64_t changes = changes_taken(lanes);
  const bool by_time = every_ms_ && now - last_at_ >= std::chrono::milliseconds(every_ms_) &&
                       (failed_since_last_ || !unchanged_since_last(updates, changes));
  const bool by_count = every_updates_ && updates - last_taken_updates_ >= every_updates_;
  const bool by_leave = leave_due_ && now >= *leave_due_;
  if (!by_time && !by_count && !by_leave) return;
  if (by_leave) leave_taken_ = now;
  leave_due_.reset();
  last_at_ = now;
  last_taken_updates_ = updates;
  last_taken_changes_ = changes;
  sequence_taken_ = true;
  pending_ = ++sequence_;
  for (const auto& lane : lanes) lane->request_snapshot(pending_);
}

bool Checkpointer::finish(const std::vector<std::unique_ptr<ServerLane>>& lanes, uint64_t updates) {
  wait();
  if (!enabled() || !started_ || lanes.empty()) return true;
  if (nothing_to_keep(updates)) {
    if (verbose_)
      logf(LogLevel::kInfo,
           "rdmaps-server: no final checkpoint: this run did not resume and applied no update (%s keeps what it "
           "held)",
           dir_.c_str());
    return true;
  }
  // A write that failed, or a snapshot asked for and not yet written, owes this one all the same.
  if (unchanged_since_last(updates, changes_taken(lanes)) && !failed_since_last_ && !pending_) {
    if (verbose_)
      logf(LogLevel::kInfo, "rdmaps-server: no final checkpoint: the newest in %s holds this model", dir_.c_str());
    return true;
  }
  pending_ = 0;
  const uint64_t sequence = ++sequence_;
  try {
    for (const auto& lane : lanes) lane->snapshot_now(sequence);
  } catch (const std::exception& e) {
    // As a write that failed: the run ends saying the model was not saved,
    // and the workers are still told (an escape skipped their disconnect).
    LaneCounters::add(failed_);
    logf(LogLevel::kError, "rdmaps-server: final checkpoint %llu failed: %s", static_cast<unsigned long long>(sequence),
         e.what());
    return false;
  }
  return write(lanes, sequence);
}

bool Checkpointer::write(const std::vector<std::unique_ptr<ServerLane>>& lanes, uint64_t sequence) {
  const auto t0 = Clock::now();
  // From here: the header's copies may fail for memory too (on the writer thread, an escape ended the process).
  try {
    CheckpointHeader h = base_;
    h.sequence = sequence;
    h.earlier_job = earlier_job_;
    h.job = job_.load(std::memory_order_relaxed);
    h.unix_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    FloatRuns arrays;
    for (const auto& lane : lanes) {
      const LaneSnapshot& s = lane->snapshot();
      arrays.params.emplace_back(s.params.get(), s.floats);
      if (s.state) arrays.state.emplace_back(s.state.get(), s.floats);
      h.versions.insert(h.versions.end(), s.versions.begin(), s.versions.end());
      h.state_since.insert(h.state_since.end(), s.state_since.begin(), s.state_since.end());
      if (h.workers.empty()) h.workers.assign(s.workers.size(), {WorkerState::kNever, UINT64_MAX, 0});
      // A worker's clock as the slowest lane saw it; its pushes over all lanes.
      for (size_t w = 0; w < s.workers.size(); ++w) {
        CheckpointWorker& k = h.workers[w];
        k.state = std::max(k.state, s.workers[w].state);
        k.clock = std::min(k.clock, s.workers[w].clock);
        k.pushes += s.workers[w].pushes;
      }
    }
    if (!arrays.state.empty() && arrays.state.size() != arrays.params.size()) arrays.state.clear();
    // Checked here, where the model is copied anyway: a diverged model written
    // and resumed without a word pruned the last finite checkpoints.
    for (size_t i = 0; i < arrays.params.size(); ++i) {
      std::string where = first_non_finite(arrays.params[i], "parameters", i);
      if (where.empty() && i < arrays.state.size()) where = first_non_finite(arrays.state[i], "optimizer state", i);
      if (!where.empty())
        throw Error(Errc::kInvalidArgument,
                    "not written: the model holds " + where +
                        " (training diverged: a smaller --lr, or --check-nan to reject such gradients); the "
                        "checkpoints in " +
                        dir_ + " are kept");
    }
    // Origins of 0 (no resume from a stateless checkpoint) are what a file without them means.
    if (std::all_of(h.state_since.begin(), h.state_since.end(), [](uint64_t v) { return v == 0; }))
      h.state_since.clear();
    if (lock_ && lock_->retake_if_replaced())
      logf(LogLevel::kWarn,
           "rdmaps-server: the checkpoint directory %s was deleted or replaced while server %u ran; it is made "
           "again and locked for this server",
           dir_.c_str(), h.index);
    const std::string path = write_checkpoint(dir_, h, arrays);
    good_.push_back(sequence);
    try {  // the checkpoint is written: a listing that fails leaves old files, it fails nothing
      prune_checkpoints(dir_, h.index, keep_, good_, earlier_job_);
    } catch (const std::exception& e) {
      logf(LogLevel::kWarn, "rdmaps-server: checkpoint %llu written, but older ones were not removed: %s",
           static_cast<unsigned long long>(sequence), e.what());
    }
    if (good_.size() > keep_) good_.erase(good_.begin(), good_.end() - keep_);
    last_updates_.store(h.updates(), std::memory_order_relaxed);
    LaneCounters::add(written_);  // one writer at a time: finish() waits for the thread
    failed_since_last_ = false;
    if (verbose_)
      logf(LogLevel::kInfo, "rdmaps-server: checkpoint %llu written to %s: %llu updates, %.1f ms",
           static_cast<unsigned long long>(sequence), path.c_str(), static_cast<unsigned long long>(h.updates()),
           std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    return true;
  } catch (const std::exception& e) {
    // Serving goes on: a full disk must not stop training, only say so.
    LaneCounters::add(failed_);
    failed_since_last_ = true;
    const bool full = std::string_view(e.what()).find("No space left") != std::string_view::npos;
    logf(LogLevel::kError, "rdmaps-server: checkpoint %llu failed: %s%s", static_cast<unsigned long long>(sequence),
         e.what(),
         full ? " (the directory needs room for --checkpoint-keep + 1 checkpoints: each is written before the oldest "
                "goes)"
              : "");
    return false;
  }
}

}  // namespace rdmaps::ps
