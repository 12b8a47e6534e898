#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

#include "math/bf16.h"
#include "rdmaps/log.h"
#include "src/ps/am_ids.h"
#include "src/ps/client_impl.h"
#include "transport/file_limit.h"
#include "transport/idle_backoff.h"

namespace rdmaps::ps {

/// The part of `t` inside `r` (empty when begin >= end).
static Range overlap(const Range& t, const Range& r) { return {std::max(t.begin, r.begin), std::min(t.end, r.end)}; }

void ClientImpl::declare(const std::string& name, size_t floats) {
  if (partition_) throw Error(Errc::kInvalidArgument, "declare('" + name + "') after connect()");
  if (name.empty()) throw Error(Errc::kInvalidArgument, "declare: a tensor needs a name");
  if (floats == 0) throw Error(Errc::kInvalidArgument, "declare('" + name + "'): a tensor needs at least one float");
  if (name.size() > kMaxTensorName)
    throw Error(Errc::kInvalidArgument, "declare: a tensor name of " + std::to_string(name.size()) +
                                            " bytes is longer than the " + std::to_string(kMaxTensorName) +
                                            " the protocol carries");
  if (!declared_names_.insert(name).second) throw Error(Errc::kInvalidArgument, "tensor '" + name + "' declared twice");
  declared_.push_back({name, floats});
}

void ClientImpl::connect() {
  if (partition_) return;
  if (declared_.empty()) throw Error(Errc::kInvalidArgument, "connect() with no tensor declared");
  // Said here, naming the table: the server would drop an oversized Hello
  // and the control channel refuse to send it, neither saying why.
  Hello table;
  table.tensors = declared_;
  if (const size_t bytes = encode(table).size(); bytes > kMaxHelloBytes) {
    size_t names = 0;
    for (const auto& t : declared_) names += t.name.size();
    throw Error(Errc::kInvalidArgument, "connect(): the " + std::to_string(declared_.size()) +
                                            " declared tensors (names of " + std::to_string(names) +
                                            " bytes in all) make a Hello of " + std::to_string(bytes) +
                                            " bytes, over the " + std::to_string(kMaxHelloBytes) +
                                            " a server reads: declare fewer tensors (one per layer, say) or "
                                            "shorter names");
  }
  partition_ =
      std::make_unique<Partition>(declared_, static_cast<uint32_t>(options_.servers.size()), config_.shard_floats);
  const uint64_t clock = clock_;
  // A worker holds a few files per server lane: 64 servers of 16 lanes pass
  // the usual soft limit of 1024 (docs/cluster.md "Waits and failures").
  transport::raise_open_file_limit();
  try {
    transport::ContextOptions o;
    o.transport = transport::parse_transport(config_.transport);
    o.name = "rdmaps-worker-" + std::to_string(options_.worker);
    o.secret = config_.secret;
    context_ = transport::create_context(o);
    context_->set_am_handler(kAmWriteBack, [this](transport::AmMessage& m) { on_write_back(m); });
    links_.resize(options_.servers.size());
    for (uint32_t i = 0; i < links_.size(); ++i) {
      const Welcome w = connect_one(i);
      links_[i].instance = w.instance;
      stats_.push_paths.push_back(links_[i].use_am ? "am" : "put");
      stats_.servers_resumed += w.resumed;
    }
  } catch (...) {
    // Not connected: a later connect() starts over (and is refused again if
    // the reason stands) instead of finding a half-made connection.
    by_endpoint_.clear();
    links_.clear();
    context_.reset();
    partition_.reset();
    stats_.push_paths.clear();
    stats_.servers_resumed = 0;
    clock_ = clock;
    throw;
  }
}

void ClientImpl::await_pull(ServerLink& link, const Lane& lane, uint64_t seq, Range fetched, const ServerLink* only) {
  const Mailbox& box = link.mailbox(lane);
  wait([&] { return link.load(box.pull_done) >= seq; },
       "waiting for parameters from server " + link.address + " lane " + std::to_string(lane.index), only);
  const uint64_t stamp = link.load(box.pull_stamp);
  for (uint32_t k = shard_of(link, fetched.begin); k <= shard_of(link, fetched.end - 1); ++k) {
    const Range extent = partition_->shard(link.index, k);
    if (extent.begin < fetched.begin || extent.end > fetched.end) continue;  // part of it: keeps its older stamp
    link.shard_stamp[k] = stamp;
    link.have_shard[k] = true;
  }
}

void ClientImpl::on_write_back(transport::AmMessage& m) {
  auto it = by_endpoint_.find(m.from);
  if (it == by_endpoint_.end()) return;
  ServerLink& link = links_[it->second.first];
  link.lanes[it->second.second].write_back.on_message(*context_, m, *link.receive);
}

// Progress, hand each payload that landed to the running pull, and publish a
// mailbox that arrived by active message once every payload sent before it has
// landed.
bool ClientImpl::progress() {
  bool moved = context_->progress() != 0;
  for (auto& link : links_)
    if (link.use_am)
      for (auto& lane : link.lanes)
        moved |= lane.write_back.publish(*link.receive,
                                         [&](uint64_t offset, uint64_t bytes) { deliver(link, offset, bytes); });
  return moved;
}

// Copying a 1 MiB message out while the next is on the wire, rather than the
// whole model after its last byte, takes the copy off the pull's critical
// path (docs/protocol.md "Write-back (pull)"). Only whole shards count as delivered; the
// pull copies whatever was not (puts, device targets, versions) at its end.
void ClientImpl::deliver(ServerLink& link, uint64_t offset, uint64_t bytes) {
  const uint64_t params = link.receive_layout.params_offset();
  if (pulling_.empty() || offset < params) return;
  const Range landed{link.range.begin + (offset - params) / sizeof(float),
                     link.range.begin + (offset - params + bytes) / sizeof(float)};
  const auto* source = reinterpret_cast<const float*>(static_cast<const uint8_t*>(link.receive->data()) + params);
  for (size_t i = 0; i < pulling_.size(); ++i) {
    const Range part = overlap(ranges_[i], landed);
    if (part.begin >= part.end || on_device_[i]) continue;
    std::memcpy(pulling_[i].out.data() + (part.begin - ranges_[i].begin), source + (part.begin - link.range.begin),
                part.size() * sizeof(float));
  }
  for (uint32_t k = shard_of(link, landed.begin); landed.begin < landed.end && k <= shard_of(link, landed.end - 1);
       ++k) {
    const Range extent = partition_->shard(link.index, k);
    if (extent.begin >= landed.begin && extent.end <= landed.end) link.delivered[k] = 1;
  }
}

template <typename Done>
void ClientImpl::wait(Done&& done, const std::string& what, const ServerLink* only) {
  const auto deadline = std::min(Clock::now() + options_.timeout, leave_by_);
  uint32_t spins = 0;
  transport::IdleBackoff idle;  // a long wait (the clock bound) must not take the core of the one it waits for
  while (!done()) {
    idle.pause(progress());
    if ((++spins & 0x3ff) == 0) {
      if (Clock::now() > deadline)
        throw Error(Errc::kTimeout, "worker " + std::to_string(options_.worker) + ": " + what + " for " +
                                        std::to_string(options_.timeout.count()) + " ms");
      for (auto& link : links_)
        for (auto& lane : link.lanes)
          if ((!only || only == &link) && lane.ep->peer_closed())
            throw Error(Errc::kPeerGone, "server " + link.address + " closed the connection while worker " +
                                             std::to_string(options_.worker) + " was " + what);
    }
  }
}

uint64_t ClientImpl::post(ServerLink& link, Lane& lane, MsgType type, uint32_t shard, uint64_t base_version,
                          uint32_t offset, uint32_t length, const void* payload,
                          std::vector<transport::Request>& inflight, uint16_t flags) {
  // Credits: a slot is reused only after the lane consumed its last message.
  if (!lane.inbox->has_credit(link.load(link.mailbox(lane).consumed_seq)))
    wait([&] { return lane.inbox->has_credit(link.load(link.mailbox(lane).consumed_seq)); },
         "waiting for an inbox credit from server " + link.address + " lane " + std::to_string(lane.index));
  SlotHeader h{};
  h.magic = kSlotMagic;
  h.type = static_cast<uint16_t>(type);
  h.flags = flags;
  h.worker = options_.worker;
  h.shard = shard;
  h.base_version = base_version;
  h.clock = clock_;
  h.offset = offset;
  h.length = length;
  if (type == MsgType::kPush) h.learning_rate = learning_rate_;
  const size_t bytes = payload ? length * ((flags & kFlagBf16) ? sizeof(uint16_t) : sizeof(float)) : 0;
  return lane.inbox->post(h, payload, bytes, inflight);
}

void ClientImpl::send(const std::string& name, std::span<const float> values, MsgType type) {
  require_connected(type == MsgType::kPush ? "push" : "init");
  Range t = partition_->tensor(name);
  check_size(name, t, values.size(), type == MsgType::kPush ? "push" : "init");
  const bool bf16 = type == MsgType::kPush && config_.wire == WireFormat::kBf16;
  const bool on_device = cuda::is_device_pointer(values.data());
  const size_t elem = bf16 ? sizeof(uint16_t) : sizeof(float);
  const void* source = values.data();
  if (on_device) {
    source = gpu().prepare(values.data(), t.begin, values.size(), bf16);
  } else if (bf16) {
    if (residual_.empty()) residual_.assign(partition_->total_floats(), 0.0f);
    wire_.resize(std::max(wire_.size(), values.size()));
    math::compress_bf16(values.data(), residual_.data() + t.begin, wire_.data(), values.size());
    source = wire_.data();
  }
  // One piece per shard the tensor touches, in server order.
  std::vector<Piece>& pieces = pieces_;  // reused: no allocation per push
  pieces.clear();
  for (auto& link : links_) {
    const Range held = overlap(t, link.range);
    for (uint64_t pos = held.begin; pos < held.end;) {
      uint32_t shard = shard_of(link, pos);
      Range s = partition_->shard(link.index, shard);
      uint64_t piece_end = std::min(held.end, s.end);
      pieces.push_back({&link, &link.lanes[link.lane_of[shard]], link.generation, shard, link.versions()[shard],
                        static_cast<uint32_t>(pos - s.begin), static_cast<uint32_t>(piece_end - pos),
                        (pos - t.begin) * elem});
      pos = piece_end;
    }
  }
  interleave_lanes(pieces);
  const uint16_t flags = bf16 ? kFlagBf16 : 0;
  // Host f32 pushes gather their pieces of part of a shard; anything else
  // goes in order behind what was gathered.
  const bool gathers = type == MsgType::kPush && !bf16 && !on_device;
  if (!gathers) flush_gathered();
  size_t posted = 0;
  if (on_device && gpu_->path() == GpuPath::kStaged) {
    posted = pieces.size();
    send_staged(pieces, static_cast<const uint8_t*>(source), elem, type, flags);
  } else {
    std::vector<transport::Request>& inflight = inflight_;
    inflight.clear();
    for (size_t i = 0; i < pieces.size();) {
      const Piece& p = pieces[i];
      if (p.generation != p.link->generation) {  // its server restarted during this push
        if (type == MsgType::kPush) ++stats_.pushes_lost;
        ++i;
        continue;
      }
      try {
        const uint8_t* payload = static_cast<const uint8_t*>(source) + p.source;
        if (gathers && p.length < partition_->shard(p.link->index, p.shard).size() &&
            (p.link->use_am || p.length * sizeof(float) < kGatherPutBytes)) {
          gather(p, reinterpret_cast<const float*>(payload));
        } else {
          post(*p.link, *p.lane, type, p.shard, p.base_version, p.offset, p.length, payload, inflight, flags);
          if (type == MsgType::kPush) ++p.link->posted;
          ++posted;
        }
        ++i;
      } catch (const Error& e) {
        recover(e, inflight);  // then this piece again, unless its server was the one that restarted
      }
    }
    // Local completion: the caller's buffer may be reused after this returns.
    try {
      for (auto& r : inflight) r.wait_for(options_.timeout);
    } catch (const Error& e) {
      recover(e, inflight);
    }
    inflight.clear();  // release the requests now; the vector keeps its capacity
  }
  if (type == MsgType::kPush) {
    stats_.pushes += posted;  // messages; a gathered run counts when it goes
    stats_.push_bytes += values.size() * elem;
    if (on_device) stats_.gpu_path = gpu_path_name(gpu_->path());
  }
}

void ClientImpl::gather(const Piece& p, const float* values) {
  const uint32_t begin = p.offset, end = p.offset + p.length;
  size_t run = kGatherRuns;
  for (size_t r = 0; r < kGatherRuns && run == kGatherRuns; ++r)
    if (gathered_[r].link == p.link && gathered_[r].shard == p.shard && gathered_[r].generation == p.generation)
      run = r;
  if (run == kGatherRuns) {  // a free run, else the one in use longest
    for (size_t r = 0; r < kGatherRuns && run == kGatherRuns; ++r)
      if (!gathered_[r].link) run = r;
    if (run == kGatherRuns) run = next_run_++ % kGatherRuns;
  }
  Gathered& g = gathered_[run];
  if (!(g.link == p.link && g.shard == p.shard && g.generation == p.generation && (end == g.begin || begin == g.end))) {
    flush_run(run);  // not adjoining: a gap would push zeros, an overlap is a second step
    if (!g.buffer) g.buffer = context_->allocate(config_.shard_floats * sizeof(float), transport::Access::kNone);
    g.link = p.link;
    g.lane = p.lane;
    g.generation = p.generation;
    g.shard = p.shard;
    g.begin = g.end = begin;
  }
  std::memcpy(static_cast<float*>(g.buffer->data()) + begin, values, p.length * sizeof(float));
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
  if (g.generation != link.generation) {  // its server restarted since
    ++stats_.pushes_lost;
    return;
  }
  std::vector<transport::Request>& inflight = gather_inflight_;
  inflight.clear();
  const float* payload = static_cast<const float*>(g.buffer->data()) + g.begin;
  for (;;) {
    try {
      post(link, *g.lane, MsgType::kPush, g.shard, link.versions()[g.shard], g.begin, g.end - g.begin, payload,
           inflight);
      ++link.posted;
      ++stats_.pushes;
      for (auto& r : inflight) r.wait_for(options_.timeout);  // the buffer gathers the next run
      inflight.clear();
      return;
    } catch (const Error& e) {
      recover(e, inflight);
      if (g.generation != link.generation) {
        ++stats_.pushes_lost;
        return;
      }
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

// Device memory UCX cannot read: chunk k+1 and k+2 are copied to pinned
// buffers while chunk k is sent; a buffer is refilled once its send completed.
void ClientImpl::send_staged(const std::vector<Piece>& pieces, const uint8_t* device_source, size_t elem, MsgType type,
                             uint16_t flags) {
  cuda::StagingRing& ring = gpu_->ring();
  const int depth = ring.depth();
  std::vector<std::vector<transport::Request>> busy(static_cast<size_t>(depth));
  auto stage = [&](size_t i) {
    auto& requests = busy[i % depth];
    for (auto& r : requests) r.wait_for(options_.timeout);
    requests.clear();
    ring.copy_from_device(static_cast<int>(i % depth), device_source + pieces[i].source, pieces[i].length * elem);
  };
  size_t i = 0;
  try {
    for (; i + 1 < static_cast<size_t>(depth) && i < pieces.size(); ++i) stage(i);
    for (i = 0; i < pieces.size(); ++i) {
      if (i + depth - 1 < pieces.size()) stage(i + depth - 1);
      const int k = static_cast<int>(i % depth);
      // Not cudaEventSynchronize: over tcp the sends already posted move only
      // while this thread drives the worker's progress.
      while (!ring.ready(k)) context_->progress();
      const Piece& p = pieces[i];
      post(*p.link, *p.lane, type, p.shard, p.base_version, p.offset, p.length, ring.buffer(k), busy[k], flags);
      if (type == MsgType::kPush) ++p.link->posted;
    }
    for (auto& requests : busy)
      for (auto& r : requests) r.wait_for(options_.timeout);
  } catch (const Error& e) {
    // A server restarted: the pieces not yet sent of this gradient are dropped for every server.
    std::vector<transport::Request> all;
    for (auto& requests : busy)
      for (auto& r : requests) all.push_back(std::move(r));
    recover(e, all);
    if (type == MsgType::kPush) stats_.pushes_lost += pieces.size() - std::min(i, pieces.size());
  }
}

GpuTransfer& ClientImpl::gpu() {
  if (!gpu_)
    gpu_ = std::make_unique<GpuTransfer>(context_->memory_support(), config_.shard_floats * sizeof(float),
                                         partition_->total_floats(), config_.staging_depth);
  return *gpu_;
}

void ClientImpl::pull(std::span<const PullTarget> targets) {
  require_connected("pull");
  for (;;) {
    try {
      return pull_once(targets);
    } catch (const Error& e) {
      recover(e, inflight_);  // then pull again: a pull is safe to repeat
    }
  }
}

void ClientImpl::pull_once(std::span<const PullTarget> targets) {
  flush_gathered();                      // a pull sees this worker's pushes
  std::vector<Range>& ranges = ranges_;  // scratch kept across calls: no allocation per step
  ranges.clear();
  on_device_.clear();
  for (const auto& t : targets) {
    ranges.push_back(partition_->tensor(t.name));
    check_size(t.name, ranges.back(), t.out.size(), "pull");
    on_device_.push_back(cuda::is_device_pointer(t.out.data()));
  }
  // From here each write-back that lands is copied to the targets (deliver()).
  for (auto& link : links_) std::fill(link.delivered.begin(), link.delivered.end(), 0);
  pulling_ = targets;
  struct EndPull {
    std::span<const PullTarget>& pulling;
    ~EndPull() { pulling = {}; }
  } end_pull{pulling_};
  // By default every pull fetches, as async does (ESSP's eager refresh: the
  // bound only holds the fastest back). With skip_pulls, SSP skips while the
  // cache holds every update from clocks <= c - s - 1, i.e. was copied when the
  // slowest worker had reached c - s.
  const bool may_skip = config_.skip_pulls && config_.staleness != kInfiniteStaleness;
  const uint64_t need = !may_skip || clock_ < config_.staleness ? 0 : clock_ - config_.staleness;
  // One request per lane covers every shard of it the targets touch; all
  // requests are posted before any is waited for.
  std::vector<Fetch>& fetch = fetch_;
  fetch.clear();
  for (auto& link : links_)
    for (auto& lane : link.lanes) fetch.push_back({&link, &lane});
  size_t base = 0;
  std::vector<transport::Request>& inflight = inflight_;
  inflight.clear();
  for (auto& link : links_) {
    for (const Range& t : ranges) {
      const Range held = overlap(t, link.range);
      for (uint64_t pos = held.begin; pos < held.end;) {  // lane by lane
        const uint32_t shard = shard_of(link, pos);
        const Lane& lane = link.lanes[link.lane_of[shard]];
        const uint64_t lane_end = partition_->shard(link.index, lane.first_shard + lane.shards - 1).end;
        const uint64_t end = std::min(held.end, lane_end);
        Fetch& f = fetch[base + lane.index];
        f.first = std::min(f.first, shard);
        f.last = std::max(f.last, shard_of(link, end - 1));
        f.floats = {std::min(f.floats.begin, pos), std::max(f.floats.end, end)};
        f.bytes += (end - pos) * sizeof(float);
        pos = end;
      }
    }
    base += link.lanes.size();
  }
  for (Fetch& f : fetch) {
    if (f.bytes == 0) continue;
    bool fresh = may_skip;
    for (uint32_t k = f.first; fresh && k <= f.last; ++k)
      fresh = f.link->have_shard[k] && f.link->shard_stamp[k] >= need;
    if (fresh) {
      ++stats_.pulls_skipped;
      stats_.pull_bytes_saved += f.bytes;
    } else {
      // Only the floats asked for: a small tensor's pull does not write back its whole shard.
      const uint64_t from = f.floats.begin - partition_->shard(f.link->index, f.first).begin;
      f.seq = post(*f.link, *f.lane, MsgType::kPull, f.first, f.floats.size(), static_cast<uint32_t>(from),
                   f.last - f.first + 1, nullptr, inflight);
    }
  }
  for (auto& r : inflight) r.wait_for(options_.timeout);
  inflight.clear();
  for (const Fetch& f : fetch) {
    if (f.seq == 0) continue;
    await_pull(*f.link, *f.lane, f.seq, f.floats);
    ++stats_.pulls;
    stats_.pull_bytes += f.bytes;
  }
  // What deliver() did not copy yet, in runs of shards.
  for (size_t i = 0; i < targets.size(); ++i) {
    const Range& t = ranges[i];
    for (auto& link : links_) {
      const Range held = overlap(t, link.range);
      const auto* params = reinterpret_cast<const float*>(static_cast<uint8_t*>(link.receive->data()) +
                                                          link.receive_layout.params_offset());
      const auto copied = [&](uint64_t pos) { return !on_device_[i] && link.delivered[shard_of(link, pos)]; };
      for (uint64_t pos = held.begin; pos < held.end;) {
        const bool skip = copied(pos);
        uint64_t end = pos;
        do {
          const auto shard = shard_of(link, end);
          end = std::min(held.end, partition_->shard(link.index, shard).end);
        } while (end < held.end && copied(end) == skip);
        float* dst = targets[i].out.data() + (pos - t.begin);
        const float* src = params + (pos - link.range.begin);
        if (!skip && on_device_[i])
          gpu().to_device(dst, src, (end - pos) * sizeof(float));
        else if (!skip)
          std::memcpy(dst, src, (end - pos) * sizeof(float));
        pos = end;
      }
    }
  }
}

void ClientImpl::clock(bool barrier) {
  require_connected("clock");
  const auto now = Clock::now();
  if (stats_.clocks) stats_.last_step_seconds = std::chrono::duration<double>(now - last_clock_call_).count();
  last_clock_call_ = now;
  flush_gathered();  // the clock goes behind every push of the step
  ++clock_;
  ++stats_.clocks;
  std::vector<transport::Request>& inflight = inflight_;
  for (;;) {
    try {
      // Every lane gets the clock, behind this worker's pushes to it (a lane
      // reconnected after its server restarted was told it when connecting).
      inflight.clear();
      for (auto& link : links_)
        for (auto& lane : link.lanes)
          if (lane.clock_sent < clock_) {
            post(link, lane, MsgType::kClock, 0, 0, 0, 0, nullptr, inflight);
            lane.clock_sent = clock_;
          }
      for (auto& r : inflight) r.wait_for(options_.timeout);
      inflight.clear();
      const uint64_t s = barrier ? 0 : config_.staleness;
      if (s == kInfiniteStaleness || clock_ <= s) return;
      // SSP: iteration c+1 begins only once every live worker reached c - s, as every lane saw it.
      const uint64_t need = clock_ - s;
      auto start = Clock::now();
      for (auto& link : links_)
        for (auto& lane : link.lanes)
          wait([&] { return link.load(link.mailbox(lane).min_clock) >= need; },
               "at clock " + std::to_string(clock_) + " waiting for the slowest worker to reach clock " +
                   std::to_string(need) + " (server " + link.address + " lane " + std::to_string(lane.index) + ")");
      stats_.clock_wait_seconds += std::chrono::duration<double>(Clock::now() - start).count();
      return;
    } catch (const Error& e) {
      recover(e, inflight);
    }
  }
}

}  // namespace rdmaps::ps

// The public Client forwards to its implementation.
namespace rdmaps {

using ps::ClientImpl;
using ps::MsgType;

namespace {
// Publishes the stats for the metrics endpoint when a call returns or throws.
struct Published {
  ClientImpl& impl;
  ~Published() { impl.publish(); }
};
}  // namespace

Client::Client(const ClientOptions& options) : impl_(std::make_unique<ClientImpl>(options)) {}
Client::~Client() = default;
void Client::declare(const std::string& name, size_t floats) { impl_->declare(name, floats); }
void Client::connect() {
  Published p{*impl_};
  impl_->connect();
}
void Client::init(const std::string& name, std::span<const float> values) {
  Published p{*impl_};
  impl_->send(name, values, MsgType::kInit);
}
void Client::push(const std::string& name, std::span<const float> gradient) {
  Published p{*impl_};
  impl_->send(name, gradient, MsgType::kPush);
}
void Client::pull(const std::string& name, std::span<float> out) {
  Published p{*impl_};
  const PullTarget one{name, out};
  impl_->pull(std::span<const PullTarget>(&one, 1));
}
void Client::pull(std::span<const PullTarget> targets) {
  Published p{*impl_};
  impl_->pull(targets);
}
void Client::clock() {
  Published p{*impl_};
  impl_->clock(false);
}
void Client::barrier() {
  Published p{*impl_};
  impl_->clock(true);
}
void Client::set_learning_rate(float lr) { impl_->set_learning_rate(lr); }
uint64_t Client::clock_value() const { return impl_->clock_value(); }
ClientStats Client::stats() const { return impl_->stats(); }
std::string Client::metrics_address() const { return impl_->metrics_address(); }

}  // namespace rdmaps
