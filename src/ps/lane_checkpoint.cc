// A lane's part of checkpoints: its snapshot, as of the moment it was asked
// for, taken copy-on-write between pushes; and its restore from a checkpoint
// before it starts.
#include <algorithm>
#include <chrono>
#include <new>
#include <string>

#include "rdmaps/error.h"
#include "src/ps/server_lane.h"

namespace rdmaps::ps {

bool ServerLane::snapshot_step() {
  if (!snapshot_active_) {
    const uint64_t wanted = snapshot_wanted_.load(std::memory_order_acquire);
    if (wanted == snapshot_taken_.load(std::memory_order_relaxed)) return false;
    // The moment the snapshot stands for: the workers' clocks and counts now,
    // each shard as it is now (copied before anything changes it).
    try {
      if (!snapshot_.params) {
        snapshot_.floats = lane_range_.size();
        snapshot_.params = std::make_unique_for_overwrite<float[]>(snapshot_.floats);
        if (store_->has_state()) snapshot_.state = std::make_unique_for_overwrite<float[]>(snapshot_.floats);
      }
    } catch (const std::bad_alloc&) {
      throw Error(Errc::kNoMemory, "no memory for the snapshot a checkpoint copies of its " +
                                       std::to_string(lane_range_.size() * sizeof(float) >> 20) + " MiB of parameters" +
                                       (store_->has_state() ? " and their state" : ""));
    }
    snapshot_.versions.resize(setup_.shards);
    snapshot_.state_since = state_since_;  // set at restore, not changed while serving
    snapshot_.workers.resize(workers_.size());
    // A worker lost within its reconnect window is expected back, as a
    // connected one is: saved as gone, a resumed server ended the job
    // without it, or waited for good for one that had left.
    const auto now = std::chrono::steady_clock::now();
    for (size_t i = 0; i < workers_.size(); ++i) {
      const Worker& w = workers_[i];
      const bool reconnecting = !w.live && w.connected_once && now < w.back_by;
      const WorkerState state = w.live || reconnecting ? WorkerState::kConnected
                                : !w.connected_once    ? WorkerState::kNever
                                                       : WorkerState::kGone;
      // One reconnecting comes back no earlier than the slowest live worker
      // (its ticket's start clock): saved at its old clock, it held a resumed
      // server's others back until it had stepped alone to them.
      snapshot_.workers[i] = {state, reconnecting ? std::max(w.clock, min_clock_) : w.clock, w.pushes};
    }
    snapshot_copied_.assign(setup_.shards, false);
    snapshot_left_ = setup_.shards;
    snapshot_next_ = 0;
    snapshot_sequence_ = wanted;
    snapshot_active_ = true;
    return true;
  }
  while (snapshot_next_ < setup_.shards && snapshot_copied_[snapshot_next_]) ++snapshot_next_;
  if (snapshot_next_ < setup_.shards) copy_shard(snapshot_next_);
  if (snapshot_left_ > 0) return true;
  snapshot_active_ = false;
  // Under the sequence it was started for: one asked for meanwhile stands
  // for a later moment, and is taken afresh on the next turn.
  snapshot_taken_.store(snapshot_sequence_, std::memory_order_release);
  return true;
}

void ServerLane::copy_shard(uint32_t k) {
  const size_t local = local_of(setup_.first_shard + k);
  const size_t n = setup_.partition->shard(setup_.server->index, setup_.first_shard + k).size();
  store_->save(local, n, snapshot_.params.get() + local, snapshot_.state ? snapshot_.state.get() + local : nullptr);
  snapshot_.versions[k] = versions_[k];
  snapshot_copied_[k] = true;
  --snapshot_left_;
}

void ServerLane::snapshot_now(uint64_t sequence) {
  // The final checkpoint is of the model as training left it: a periodic
  // snapshot still in progress stands for the moment it was asked for, and
  // finished and published as this one it lost every update since.
  snapshot_active_ = false;
  request_snapshot(sequence);
  while (!snapshot_ready(sequence)) snapshot_step();
}

void ServerLane::restore(const Checkpoint& c) {
  const uint64_t at = lane_range_.begin - server_range_.begin;
  store_->load(0, lane_range_.size(), c.params.data() + at, c.state.empty() ? nullptr : c.state.data() + at);
  std::copy_n(c.header.versions.begin() + setup_.first_shard, setup_.shards, versions_.begin());
  // A checkpoint without state (another rule's, or a stateless one) starts it
  // afresh here; one with state goes on from the origin it saved (a format-1
  // file saved none: 0, off only by a bias correction for updates resumed
  // within ~3/(1-ms_momentum) of an earlier such start).
  if (c.state.empty())
    state_since_ = versions_;
  else if (!c.header.state_since.empty())
    std::copy_n(c.header.state_since.begin() + setup_.first_shard, setup_.shards, state_since_.begin());
  for (size_t i = 0; i < workers_.size(); ++i) {
    const CheckpointWorker& k = c.header.workers[i];
    Worker& w = workers_[i];
    w.clock = c.header.resumed_clock(i);
    // Workers expected back hold the clock until they are, like workers not
    // yet connected. A job that had ended resumes as a new run that waits for
    // all of them; before, such a server found nothing left to do and exited.
    w.connected_once = !c.header.awaits(i);
    w.pushes = setup_.index == 0 ? k.pushes : 0;  // lane 0 carries the server's count
  }
  update_min_clock();
}

}  // namespace rdmaps::ps
