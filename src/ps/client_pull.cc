// The worker's pulls (docs/protocol.md "Write-back (pull)"): one request per
// lane for the floats its tensors want, the cache skip_pulls serves from, and
// the copy out to the caller's tensors as write-backs land.
#include <algorithm>
#include <cstring>
#include <span>

#include "src/ps/client_impl.h"

namespace rdmaps::ps {

void ClientImpl::on_write_back(transport::AmMessage& m) {
  auto it = by_endpoint_.find(m.from);
  if (it == by_endpoint_.end()) return;
  ServerLink& link = links_[it->second.first];
  link.lanes[it->second.second].write_back.on_message(
      *context_, m, *link.receive, [&](uint64_t offset, uint64_t bytes) { return in_place(link, offset, bytes); });
}

void ClientImpl::register_memory(std::span<float> memory) {
  if (memory.empty()) throw Error(Errc::kInvalidArgument, "register_memory: no memory given");
  if (cuda::is_device_pointer(memory.data()))
    throw Error(Errc::kInvalidArgument, "register_memory: " + std::to_string(memory.size()) +
                                            " floats at a CUDA device address; only host memory lands in place");
  // A size past the address space wrapped to 0 bytes, and that entry failed
  // every later connect() and register_memory().
  const auto start = reinterpret_cast<uintptr_t>(memory.data());
  if (memory.size() > (UINTPTR_MAX - start) / sizeof(float))
    throw Error(Errc::kInvalidArgument, "register_memory: " + std::to_string(memory.size()) +
                                            " floats from that address pass the end of the address space");
  registered_.push_back({memory.data(), memory.data() + memory.size(), nullptr});
  if (!context_) return;
  register_with_transport();  // refused: forgotten, the client goes on as before the call
  offer_late_landings();
}

// Remote-write rights: the lanes of a put path are given its key (connect_one()).
// A region the transport refuses is forgotten, so that the error is the
// caller's to act on once, not every later connect()'s.
void ClientImpl::register_with_transport() {
  for (auto it = registered_.begin(); it != registered_.end(); ++it) {
    if (it->region) continue;
    try {
      it->region =
          context_->register_memory(it->begin, (it->end - it->begin) * sizeof(float), transport::Access::kRemoteWrite);
    } catch (const Error& e) {
      registered_.erase(it);
      throw Error(e.code(), std::string("register_memory: ") + e.what());
    }
  }
}

// A payload lands straight in the running pull's targets when they take all
// of it and lie in registered memory: that memory outlives the
// Client, so a receive that a failed pull leaves posted cannot write into
// freed memory. The cache that skip_pulls serves from is the receive region,
// so then everything lands there.
WriteBackReceiver::Destination ClientImpl::in_place(const ServerLink& link, uint64_t offset, uint64_t bytes) const {
  const uint64_t params = link.receive_layout.params_offset();
  if (offset < params || bytes == 0 || (offset - params) % sizeof(float) != 0 || bytes % sizeof(float) != 0) return {};
  const Range landed = floats_at(link, offset, bytes);
  if (landed.end > link.range.end) return {};  // past this server's range: the receive region refuses it
  const auto [index, at] = landing_of(landed);
  if (index == registered_.size() || !registered_[index].region) return {};
  return {registered_[index].region.get(), at};
}

std::pair<size_t, uint64_t> ClientImpl::landing_of(Range landed) const {
  const std::pair<size_t, uint64_t> none{registered_.size(), 0};
  if (registered_.empty() || pulling_.empty() || config_.skip_pulls) return none;
  // The targets the floats are for must take all of them, each once, at
  // the place the table gives them: one tensor, or several laid out in memory
  // as in the table (views of one buffer). A float no target wants would
  // land in memory that is not its own; a tensor pulled twice in one call
  // gets its copies from the receive region.
  uintptr_t origin = 0;  // the address global float 0 would have
  uint64_t wanted = 0;
  for (size_t i = 0; i < pulling_.size(); ++i) {
    const Range part = overlap(ranges_[i], landed);
    if (part.begin >= part.end) continue;
    const uintptr_t o = reinterpret_cast<uintptr_t>(pulling_[i].out.data()) - ranges_[i].begin * sizeof(float);
    if (device_[i] >= 0 || (wanted && o != origin)) return none;
    origin = o;
    wanted += part.size();
  }
  if (wanted != landed.size()) return none;
  const auto* at = reinterpret_cast<const float*>(origin + landed.begin * sizeof(float));
  for (size_t r = 0; r < registered_.size(); ++r)
    if (at >= registered_[r].begin && at + landed.size() <= registered_[r].end)
      return {r, static_cast<uint64_t>(at - registered_[r].begin) * sizeof(float)};
  return none;
}

// Copying a 1 MiB message out while the next is on the wire, rather than the
// whole model after its last byte, takes the copy off the pull's critical
// path (docs/protocol.md "Write-back (pull)"). A copied message counts whole
// shards as delivered, one in place every shard it touched; the pull copies
// whatever was not (puts, device targets, partial shards copied) at its end.
void ClientImpl::deliver(ServerLink& link, uint64_t offset, uint64_t bytes, bool in_place) {
  const uint64_t params = link.receive_layout.params_offset();
  if (pulling_.empty() || offset < params) return;
  const Range landed = floats_at(link, offset, bytes);
  if (in_place) {
    stats_.pull_bytes_in_place += bytes;
  } else {
    const auto* source = reinterpret_cast<const float*>(static_cast<const uint8_t*>(link.receive->data()) + params);
    for (size_t i = 0; i < pulling_.size(); ++i) {
      const Range part = overlap(ranges_[i], landed);
      if (part.begin >= part.end || device_[i] >= 0) continue;
      std::memcpy(pulling_[i].out.data() + (part.begin - ranges_[i].begin), source + (part.begin - link.range.begin),
                  part.size() * sizeof(float));
    }
  }
  // A message in place is in the target, not in the receive region: the copy
  // at the pull's end must skip every shard it touched. Its first and last
  // shard may be partial; what else the pull asked of them came in messages
  // of its own, copied here as they landed (active messages), or by puts
  // that never land in place (plan_fetches()).
  for (uint32_t k = shard_of(link, landed.begin); landed.begin < landed.end && k <= shard_of(link, landed.end - 1);
       ++k) {
    const Range extent = partition_->shard(link.index, k);
    if (in_place || (extent.begin >= landed.begin && extent.end <= landed.end)) link.delivered[k] = 1;
  }
}

void ClientImpl::pull(std::span<const PullTarget> targets) {
  require_connected("pull");
  // A pull repeated after a reconnect counts once: the lanes the failed
  // attempt had finished were counted again by the next.
  // (The counters alone, not the whole stats: its strings would be copied per pull.)
  const PullCounters before = pull_counters(stats_);
  // Published meanwhile (a long wait publishes), the counts of lanes that had
  // answered went down again at the retry: a counter reset to Prometheus,
  // whose rate() then counted every earlier pull again.
  pull_counters_before_ = before;
  struct Done {
    std::optional<PullCounters>& before;
    ~Done() { before.reset(); }
  } done{pull_counters_before_};
  for (;;) {
    try {
      return pull_once(targets);
    } catch (const Error& e) {
      recover(e, inflight_);  // then pull again: a pull is safe to repeat
      pull_counters(stats_) = before;
    }
  }
}

void ClientImpl::pull_once(std::span<const PullTarget> targets) {
  flush_gathered();                      // a pull sees this worker's pushes
  std::vector<Range>& ranges = ranges_;  // scratch kept across calls: no allocation per step
  ranges.clear();
  device_.clear();
  indices_.clear();
  for (const auto& t : targets) {
    indices_.push_back(partition_->index(t.name, "pull"));
    ranges.push_back(partition_->tensor(indices_.back()));
    check_size(t.name, ranges.back(), t.out.size(), "pull");
    device_.push_back(cuda::device_of(t.out.data()));
    // One worker, one GPU: refused here, before anything is fetched (found in
    // the copy out, the targets before it had been overwritten).
    if (device_.back() >= 0) gpu(device_.back(), t.name);
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
  plan_fetches();
  noted_versions_.clear();
  std::vector<Fetch>& fetch = fetch_;
  std::vector<transport::Request>& inflight = inflight_;
  abandon_pending(inflight);  // none, unless a call ended by something else than an Error left some
  // The requests of a wave are all posted before any is waited for.
  for (size_t begin = 0, end = 0; begin < fetch.size(); begin = end) {  // fetch_ is in wave order
    while (end < fetch.size() && fetch[end].wave == fetch[begin].wave) ++end;
    for (Fetch& f : std::span(fetch).subspan(begin, end - begin)) {
      const uint32_t first = shard_of(*f.link, f.floats.begin), last = shard_of(*f.link, f.floats.end - 1);
      bool fresh = may_skip;
      for (uint32_t k = first; fresh && k <= last; ++k) fresh = f.link->have_shard[k] && f.link->shard_stamp[k] >= need;
      if (fresh) {
        ++stats_.pulls_skipped;
        stats_.pull_bytes_saved += f.floats.size() * sizeof(float);
        continue;
      }
      const uint64_t from = f.floats.begin - partition_->shard(f.link->index, first).begin;
      // A put path's lanes put them straight into registered memory that takes
      // them all, unless another request puts floats of the same shard
      // elsewhere: the copy at the end skips a shard that landed in place.
      const auto [landing, at] =
          f.lane->landings && !f.shares_shard ? landing_of(f.floats) : std::pair{registered_.size(), uint64_t{0}};
      f.in_place = landing < f.lane->landings;
      f.seq =
          post(*f.link, *f.lane, MsgType::kPull, first, f.floats.size(), static_cast<uint32_t>(from), last - first + 1,
               nullptr, inflight, 0, f.in_place ? static_cast<uint32_t>(landing + 1) : 0, f.in_place ? at : 0);
      f.lane->last_pull = f.seq;
    }
    complete(inflight);
    inflight.clear();
    for (const Fetch& f : std::span(fetch).subspan(begin, end - begin)) {
      if (f.seq == 0) continue;
      // One stamp a lane: a request before another of the same lane and wave
      // may read the later one's (targets with gaps across its shards).
      await_pull(*f.link, *f.lane, f.seq, f.floats, nullptr, f.seq == f.lane->last_pull);
      note_copy_versions(f);
      if (f.in_place)
        deliver(*f.link,
                f.link->receive_layout.params_offset() + (f.floats.begin - f.link->range.begin) * sizeof(float),
                f.floats.size() * sizeof(float), true);
      ++stats_.pulls;
      stats_.pull_bytes += f.floats.size() * sizeof(float);
    }
  }
  // What deliver() did not copy yet, in runs of shards.
  for (size_t i = 0; i < targets.size(); ++i) {
    const Range& t = ranges[i];
    for (auto& link : links_) {
      const Range held = overlap(t, link.range);
      const auto* params = reinterpret_cast<const float*>(static_cast<uint8_t*>(link.receive->data()) +
                                                          link.receive_layout.params_offset());
      const auto copied = [&](uint64_t pos) { return device_[i] < 0 && link.delivered[shard_of(link, pos)]; };
      for (uint64_t pos = held.begin; pos < held.end;) {
        const bool skip = copied(pos);
        uint64_t end = pos;
        do {
          const auto shard = shard_of(link, end);
          end = std::min(held.end, partition_->shard(link.index, shard).end);
        } while (end < held.end && copied(end) == skip);
        float* dst = targets[i].out.data() + (pos - t.begin);
        const float* src = params + (pos - link.range.begin);
        if (!skip && device_[i] >= 0)
          gpu(device_[i], targets[i].name).to_device(dst, src, (end - pos) * sizeof(float));
        else if (!skip)
          std::memcpy(dst, src, (end - pos) * sizeof(float));
        pos = end;
      }
    }
  }
  // Only now is every target's copy of that version (a pull that fails before
  // leaves the versions as old as the copies it may have left).
  for (const auto& [segment, version] : noted_versions_) copy_versions_[segment] = version;
}

// One request per run of adjoining targets and lane, for exactly their
// floats: a request spanning a gap between targets made the server refresh
// its DC backup of floats this worker's copy did not get. Two requests that
// share a shard (targets with a gap inside it) go one after the other: each
// write-back sets the shard's version word, and the first one's version must
// be read before the second overwrites it.
void ClientImpl::plan_fetches() {
  std::vector<size_t>& order = pull_order_;
  order.resize(ranges_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  const auto by_begin = [&](size_t a, size_t b) { return ranges_[a].begin < ranges_[b].begin; };
  if (!std::is_sorted(order.begin(), order.end(), by_begin)) std::sort(order.begin(), order.end(), by_begin);
  fetch_.clear();
  for (auto& link : links_) {
    const size_t link_first = fetch_.size();
    for (size_t i = 0; i < order.size();) {
      // A run: this target and those that adjoin or overlap it (a tensor asked twice).
      size_t first_target = i;
      Range run = ranges_[order[i]];
      while (++i < order.size() && ranges_[order[i]].begin <= run.end)
        run.end = std::max(run.end, ranges_[order[i]].end);
      const Range held = overlap(run, link.range);
      for (uint64_t pos = held.begin; pos < held.end;) {                 // lane by lane
        while (ranges_[order[first_target]].end <= pos) ++first_target;  // ends ascend as begins do
        Lane& lane = link.lanes[link.lane_of[shard_of(link, pos)]];
        const uint64_t end = std::min(held.end, partition_->shard(link.index, lane.first_shard + lane.shards - 1).end);
        Fetch f{&link, &lane, {pos, end}, first_target, 0, false};
        // In float order, a request sharing a shard with an earlier one shares it with the one just before.
        if (fetch_.size() > link_first && shard_of(link, fetch_.back().floats.end - 1) == shard_of(link, pos)) {
          f.wave = fetch_.back().wave + 1;
          f.shares_shard = fetch_.back().shares_shard = true;
        }
        fetch_.push_back(f);
        pos = end;
      }
    }
  }
  // In wave order, so that a pull goes through them once (a scan of all of
  // them per wave made a pull of every other tensor of a shard quadratic).
  const auto by_wave = [](const Fetch& a, const Fetch& b) { return a.wave < b.wave; };
  if (!std::is_sorted(fetch_.begin(), fetch_.end(), by_wave)) std::stable_sort(fetch_.begin(), fetch_.end(), by_wave);
}

// The versions the targets' copies get, read as soon as their request was
// answered (a later wave may overwrite the shard's version word), kept until
// the copies hold them.
void ClientImpl::note_copy_versions(const Fetch& f) {
  const ServerLink& link = *f.link;
  for (size_t o = f.first_target; o < pull_order_.size(); ++o) {
    const size_t i = pull_order_[o];
    if (ranges_[i].begin >= f.floats.end) break;
    const Range part = overlap(ranges_[i], f.floats);
    if (part.begin >= part.end) continue;
    for (uint32_t k = shard_of(link, part.begin); k <= shard_of(link, part.end - 1); ++k)
      noted_versions_.emplace_back(partition_->segment(indices_[i], link.index, k), link.versions()[k]);
  }
}

}  // namespace rdmaps::ps
