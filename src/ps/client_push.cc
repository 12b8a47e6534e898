// The worker's pushes (docs/protocol.md "Inbox slot", "Small tensors"): a
// tensor cut into pieces by shard, small ones gathered per shard, device
// memory sent directly or staged.
#include <algorithm>
#include <cstring>
#include <utility>

#include "math/bf16.h"
#include "rdmaps_config.h"
#include "src/ps/client_impl.h"
#include "src/ps/staged_pipeline.h"

namespace rdmaps::ps {

void ClientImpl::send(const std::string& name, std::span<const float> values, MsgType type) {
  require_connected(type == MsgType::kPush ? "push" : "init");
  const char* op = type == MsgType::kPush ? "push" : "init";
  const uint32_t index = partition_->index(name, op);
  const Range t = partition_->tensor(index);
  check_size(name, t, values.size(), op);
  const bool bf16 = type == MsgType::kPush && config_.wire == WireFormat::kBf16;
  const int device = cuda::device_of(values.data());
  const bool on_device = device >= 0;
  const size_t elem = bf16 ? sizeof(uint16_t) : sizeof(float);
  const void* source = values.data();
  if (on_device) {
    source = gpu(device, name).prepare(values.data(), t.begin, values.size(), bf16);
  } else if (bf16) {
    if (residual_.empty()) residual_.assign(partition_->total_floats(), 0.0f);
    wire_.resize(std::max(wire_.size(), values.size()));
    math::compress_bf16(values.data(), residual_.data() + t.begin, wire_.data(), values.size());
    source = wire_.data();
  }
  // Host pushes (f32 or bf16) gather their pieces of part of a shard;
  // anything else goes in order behind what was gathered, flushed before its
  // pieces are cut: a flush that reconnects a restarted server made them
  // older than their server, and they were skipped (an init, unsaid).
  const bool gathers = type == MsgType::kPush && !on_device;
  if (!gathers) flush_gathered();
  // One piece per shard the tensor touches, in server order.
  std::vector<Piece>& pieces = pieces_;  // reused: no allocation per push
  pieces.clear();
  for (auto& link : links_) {
    const Range held = overlap(t, link.range);
    for (uint64_t pos = held.begin; pos < held.end;) {
      uint32_t shard = shard_of(link, pos);
      Range s = partition_->shard(link.index, shard);
      uint64_t piece_end = std::min(held.end, s.end);
      pieces.push_back({&link, &link.lanes[link.lane_of[shard]], link.generation, shard,
                        copy_versions_[partition_->segment(index, link.index, shard)],
                        static_cast<uint32_t>(pos - s.begin), static_cast<uint32_t>(piece_end - pos),
                        (pos - t.begin) * elem});
      pos = piece_end;
    }
  }
  interleave_lanes(pieces);
  const uint16_t flags = bf16 ? kFlagBf16 : 0;
  if (on_device && gpu_->path() == GpuPath::kStaged) {
    // An init goes again whole after a server restarted during it (below:
    // only that server's pieces); it returned with that server's shards unset.
    for (int pass = 1;; ++pass) {
      if (send_staged(pieces, static_cast<const uint8_t*>(source), elem, type, flags) || type != MsgType::kInit) break;
      if (pass == 3)
        throw Error(Errc::kPeerGone, "init(\"" + name +
                                         "\") from GPU memory: a server restarted during each of 3 tries; the "
                                         "tensor may not be set");
      for (Piece& p : pieces) {
        p.lane = &p.link->lanes[p.link->lane_of[p.shard]];
        p.generation = p.link->generation;
      }
    }
  } else {
    // An init sets values, so a server that restarted during it (and came
    // back) gets all of its pieces again: they were skipped, and those sent
    // before its restart may be missing from its checkpoint; init() returned
    // with those shards as the checkpoint had them, or at zero. A piece's
    // generation is its server's when the pass began.
    for (int pass = 1;; ++pass) {
      send_pieces(pieces, source, elem, type, flags, gathers);
      if (type != MsgType::kInit) break;
      std::erase_if(pieces, [](const Piece& p) { return p.generation == p.link->generation || p.link->down(); });
      if (pieces.empty()) break;
      if (pass == 3)  // it restarted during each of them: not returned as if set
        throw Error(Errc::kPeerGone, "init(\"" + name + "\"): server " + pieces.front().link->address +
                                         " restarted during each of 3 tries; its part of the tensor may not be set");
      for (Piece& p : pieces) {
        p.lane = &p.link->lanes[p.link->lane_of[p.shard]];
        p.generation = p.link->generation;
      }
    }
  }
  if (type == MsgType::kPush) {
    stats_.push_bytes += values.size() * elem;
    if (on_device) stats_.gpu_path = gpu_path_name(gpu_->path());
  }
}

// One pass over `pieces`: posted (or gathered), each again after a reconnect
// unless its server was the one that restarted; then locally complete.
void ClientImpl::send_pieces(std::vector<Piece>& pieces, const void* source, size_t elem, MsgType type, uint16_t flags,
                             bool gathers) {
  // Pushes (messages) count as each is posted, or dropped as lost: a call
  // that failed mid-way left its posted ones uncounted while the reconnect
  // counted them lost, and more were lost than pushed.
  const auto count_push = [&] {
    if (type == MsgType::kPush) ++stats_.pushes;
  };
  std::vector<transport::Request>& inflight = inflight_;
  abandon_pending(inflight);  // none, unless a call ended by something else than an Error left some
  for (size_t i = 0; i < pieces.size();) {
    const Piece& p = pieces[i];
    if (p.generation != p.link->generation) {  // its server restarted during this push
      if (type == MsgType::kPush) ++stats_.pushes_lost;
      count_push();  // counted as sent, and as lost: sent - lost = what the servers hold
      ++i;
      continue;
    }
    try {
      const uint8_t* payload = static_cast<const uint8_t*>(source) + p.source;
      if (gathers && p.length < partition_->shard(p.link->index, p.shard).size() &&
          (p.link->use_am || p.length * elem < kGatherPutBytes)) {
        gather(p, payload);
      } else {
        post(*p.link, *p.lane, type, p.shard, p.base_version, p.offset, p.length, payload, inflight, flags);
        if (type == MsgType::kPush) ++p.link->posted;
        count_push();
      }
      ++i;
    } catch (const Error& e) {
      recover(e, inflight);  // then this piece again, unless its server was the one that restarted
    }
  }
  // Local completion: the caller's buffer may be reused after this returns.
  try {
    complete(inflight);
  } catch (const Error& e) {
    recover(e, inflight);
  }
  inflight.clear();  // release the requests now; the vector keeps its capacity
}

void ClientImpl::gather(const Piece& p, const uint8_t* payload) {
  const uint32_t begin = p.offset, end = p.offset + p.length;
  const auto holds_shard = [&](const Gathered& g) {
    return g.link == p.link && g.shard == p.shard && g.generation == p.generation;
  };
  size_t run = kGatherRuns;
  for (size_t r = 0; r < kGatherRuns && run == kGatherRuns; ++r)
    if (holds_shard(gathered_[r])) run = r;
  if (run == kGatherRuns) {  // a free run, else the one in use longest
    for (size_t r = 0; r < kGatherRuns && run == kGatherRuns; ++r)
      if (!gathered_[r].link) run = r;
    if (run == kGatherRuns) run = next_run_++ % kGatherRuns;
  }
  Gathered& g = gathered_[run];
  // Not adjoining: a gap would push zeros, an overlap is a second step; a copy
  // of another version, or a push at another rate (a run that a failed
  // set_learning_rate() kept): one message carries one base version and one rate.
  if (!(holds_shard(g) && (end == g.begin || begin == g.end) && g.base_version == p.base_version &&
        g.learning_rate == learning_rate_)) {
    flush_run(run);
    if (!g.buffer) g.buffer = context_->allocate(config_.shard_floats * sizeof(float), transport::Access::kNone);
    g.link = p.link;
    g.lane = p.lane;
    g.generation = p.generation;
    g.learning_rate = learning_rate_;
    g.shard = p.shard;
    g.begin = g.end = begin;
    g.base_version = p.base_version;
  }
  const size_t elem = wire_elem();
  std::memcpy(static_cast<uint8_t*>(g.buffer->data()) + begin * elem, payload, p.length * elem);
  g.begin = std::min(g.begin, begin);
  g.end = std::max(g.end, end);
}

void ClientImpl::flush_gathered() {
  for (size_t r = 0; r < kGatherRuns; ++r) flush_run(r);
}

void ClientImpl::flush_run(size_t run) {
  Gathered& g = gathered_[run];
  if (!g.link) return;
  ServerLink& link = *std::exchange(g.link, nullptr);
  // One push, sent or lost with its server, counted when it is either (a run
  // kept for the next flush was published as sent, then taken back: a
  // counter going backwards); as in send(), a run posted before its server
  // restarted is accounted by the reconnect (link.posted), one never posted here.
  const auto lost = [&] {
    ++stats_.pushes;
    ++stats_.pushes_lost;
  };
  if (g.generation != link.generation) return lost();  // its server restarted since
  const uint64_t connection = link.connection;
  // At the rate it was pushed at (set_learning_rate() flushes first, and keeps a run that failed).
  const auto current = std::exchange(learning_rate_, g.learning_rate);
  struct Rate {
    std::optional<float>& now;
    std::optional<float> after;
    ~Rate() { now = after; }
  } restore{learning_rate_, current};
  // Not posted (no credit in time, interrupt(), out of memory): the push()
  // that gathered it returned, so it is not dropped unsaid. It stays gathered
  // for the next flush (a call tried again, leaving), or is lost with a
  // connection that went (its server gone for good, or reconnected meanwhile:
  // its lane is no more).
  const auto keep_or_lose = [&] {
    if (!link.down() && link.connection == connection)
      g.link = &link;
    else
      lost();
  };
  std::vector<transport::Request>& inflight = gather_inflight_;
  abandon_pending(inflight);  // none, unless a flush ended by something else than an Error left some
  const size_t elem = wire_elem();
  const uint8_t* payload = static_cast<const uint8_t*>(g.buffer->data()) + g.begin * elem;
  bool posted = false;
  for (;;) {
    try {
      if (!posted) {
        post(link, *g.lane, MsgType::kPush, g.shard, g.base_version, g.begin, g.end - g.begin, payload, inflight,
             elem == sizeof(uint16_t) ? kFlagBf16 : 0);
        posted = true;
        ++link.posted;
        ++stats_.pushes;
      }
      complete(inflight);  // the buffer gathers the next run
      inflight.clear();
      return;
    } catch (const Error& e) {
      try {
        recover(e, inflight);  // lets the posted message finish or fail, reconnects
      } catch (...) {
        if (!posted) keep_or_lose();
        throw;
      }
      if (posted) return;  // never posted twice
      if (g.generation != link.generation) return lost();
    } catch (...) {
      if (!posted) keep_or_lose();
      throw;
    }
  }
}

void ClientImpl::interleave_lanes(std::vector<Piece>& pieces) {
  runs_.clear();
  for (size_t i = 0; i < pieces.size(); ++i)
    if (i == 0 || pieces[i].lane != pieces[i - 1].lane) runs_.push_back(i);
  if (runs_.size() < 2) return;
  runs_.push_back(pieces.size());
  interleaved_.clear();
  for (size_t k = 0; interleaved_.size() < pieces.size(); ++k)
    for (size_t r = 0; r + 1 < runs_.size(); ++r)
      if (runs_[r] + k < runs_[r + 1]) interleaved_.push_back(pieces[runs_[r] + k]);
  pieces.swap(interleaved_);
}

// Device memory UCX cannot read: the next chunks are copied to pinned buffers
// while the ones before are sent (run_staged); a buffer is refilled once its
// send completed.
bool ClientImpl::send_staged(const std::vector<Piece>& pieces, const uint8_t* device_source, size_t elem, MsgType type,
                             uint16_t flags) {
  cuda::StagingRing& ring = gpu_->ring();
  const int depth = ring.depth();
  // Kept across calls: made per push, up to 65 allocations (hot-path review).
  std::vector<std::vector<transport::Request>>& busy = staged_busy_;
  busy.resize(static_cast<size_t>(depth));
  for (auto& requests : busy) requests.clear();
  size_t i = 0;  // pieces posted
  try {
    run_staged(
        pieces.size(), depth,
        [&](size_t b) {
          complete(busy[b]);
          busy[b].clear();
        },
        [&](size_t k) {
          ring.copy_from_device(static_cast<int>(k % depth), device_source + pieces[k].source, pieces[k].length * elem);
        },
        [&](size_t k) {
          const int b = static_cast<int>(k % depth);
          // Not cudaEventSynchronize: over tcp the sends already posted move only
          // while this thread drives the worker's progress; a copy that never
          // ends (a hung GPU) meets the timeout and interrupt() as any wait does.
          wait_for_copy(ring, b);
          const Piece& p = pieces[k];
          post(*p.link, *p.lane, type, p.shard, p.base_version, p.offset, p.length, ring.buffer(b), busy[b], flags);
          if (type == MsgType::kPush) {
            ++p.link->posted;
            ++stats_.pushes;
          }
        },
        i);
    for (auto& requests : busy) complete(requests);
  } catch (const Error& e) {
    std::vector<transport::Request> all;
    for (auto& requests : busy)
      for (auto& r : requests) all.push_back(std::move(r));
    recover(e, all);
    // A server restarted: the pieces not yet sent of this gradient are dropped
    // for every server, counted as sent and lost (as send() counts them).
    if (type == MsgType::kPush) {
      const size_t unsent = pieces.size() - std::min(i, pieces.size());
      stats_.pushes += unsent;
      stats_.pushes_lost += unsent;
    }
    return false;
  }
  return true;
}

GpuTransfer& ClientImpl::gpu(int device, const std::string& tensor) {
  if (!RDMAPS_HAVE_CUDA)
    throw Error(Errc::kUnsupported, "tensor '" + tensor + "' is in the memory of GPU " + std::to_string(device) +
                                        ", and this rdmaps was built without CUDA: give host memory, or build "
                                        "with nvcc (meson -Dcuda=enabled)");
  if (!gpu_) {
    uint64_t largest = 0;
    for (const auto& t : partition_->tensors()) largest = std::max<uint64_t>(largest, t.floats);
    gpu_ = std::make_unique<GpuTransfer>(device, context_->memory_support(), config_.shard_floats * sizeof(float),
                                         partition_->total_floats(), config_.staging_depth, config_.gpu_path, largest);
  }
  if (gpu_->device() != device)
    throw Error(Errc::kInvalidArgument, "tensor '" + tensor + "' is on GPU " + std::to_string(device) +
                                            " while this worker's device tensors are on GPU " +
                                            std::to_string(gpu_->device()) + ": one worker uses one GPU");
  return *gpu_;
}

}  // namespace rdmaps::ps
