#include "src/ps/server_lane.h"

#include <pthread.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <span>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "src/ps/am_ids.h"
#include "src/ps/context_options.h"
#include "src/ps/flush_denormals.h"
#include "src/ps/gpu_shard.h"
#include "src/ps/slot_check.h"
#include "transport/idle_backoff.h"
#include "transport/memory_limit.h"

namespace rdmaps::ps {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using transport::Access;

namespace {
constexpr auto kHelloTimeout = 5s;          // a connected peer's LaneHello
constexpr size_t kMaxLaneHello = 1u << 20;  // up to kMaxLandingRegions descriptors
constexpr auto kHousekeepingEvery = 1ms;

bool finite_floats(const float* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return false;
  return true;
}

// The same on bf16 bits: its exponent all ones is an Inf or a NaN (widening
// the piece first was a pass over it into a buffer of its own).
bool finite_bf16(const uint16_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if ((p[i] & 0x7f80u) == 0x7f80u) return false;
  return true;
}
}  // namespace

LaneCounters::LaneCounters(uint32_t workers)
    : applied(workers), rejected_by(workers), bytes_from(workers), staleness(kStalenessBuckets), taken(workers) {}

ServerLane::ServerLane(const LaneSetup& setup)
    : setup_(setup),
      update_(update_params(setup.config)),
      slot_layout_{setup.config.shard_floats * sizeof(float)},
      receive_layout_{setup.lanes, 0, 0},
      workers_(setup.server->workers),
      live_(setup.server->workers),
      reached_(setup.server->workers),
      admitting_(setup.server->workers),
      suspects_(setup.server->workers),
      forsaken_(setup.server->workers),
      server_tag_(server_tag(*setup.server)),
      tag_(server_tag_ + ": lane " + std::to_string(setup.index)),
      pending_(tag_, kHelloTimeout, kMaxLaneHello),
      refusals_(tag_),
      rejections_(tag_, "messages rejected"),
      counters_(setup.server->workers) {
  const ServerOptions& so = *setup.server;
  const Partition& p = *setup.partition;
  server_range_ = p.server_range(so.index);
  lane_range_ = {p.shard(so.index, setup.first_shard).begin,
                 p.shard(so.index, setup.first_shard + setup.shards - 1).end};
  receive_layout_ = ReceiveLayout{setup.lanes, p.shard_count(so.index), server_range_.size()};
  versions_.assign(setup.shards, 0);
  state_since_.assign(setup.shards, 0);
  for (uint32_t i = 0; i < workers_.size(); ++i) workers_[i].id = i;
  const auto listen = transport::SockAddr::parse(so.listen);
  context_ = transport::create_context(
      context_options(setup.config, "rdmaps-server-lane-" + std::to_string(setup.index), listen.is_loopback()));
  // Every lane on the server's host, at a port of its own.
  listener_ = context_->listen(listen.with_port(0));
  port_ = static_cast<uint16_t>(listener_->address().port());
  context_->set_am_handler(kAmPush, [this](transport::AmMessage& m) { on_push_am(m); });
  store_ = so.gpu_shard ? make_gpu_store(setup.gpu_device, lane_range_.size(), setup.config.shard_floats, so.workers,
                                         setup.config.rule)
                        : make_host_store(*context_, lane_range_.size(), setup.config.shard_floats, so.workers,
                                          setup.config.rule);
  direct_source_ = store_->direct_source().has_value();
  copy_bytes_ = std::max<size_t>(lane_range_.size() * sizeof(float), 64);
}

ServerLane::~ServerLane() {
  stop();
  join();
  for (auto& w : workers_) drop(w, nullptr);
  closing_.close_all(*context_);
  // Sends given up on may read the store's parameters (the direct source of
  // a write-back), which go with this lane's members, before the context.
  context_->drain(std::chrono::steady_clock::now() + std::chrono::seconds(1));
  // The context, destroyed after this lane's members, still progresses: a
  // push arriving then must not reach them.
  context_->set_am_handler(kAmPush, [](transport::AmMessage&) {});
}

void ServerLane::start() {
  thread_ = std::thread([this] {
    char name[16];  // what top -H, perf and /proc show for this thread
    std::snprintf(name, sizeof name, "rdmaps-lane%u", setup_.index);
    pthread_setname_np(pthread_self(), name);
    try {
      run();
    } catch (...) {
      failed(std::current_exception());
    }
  });
}

void ServerLane::failed(std::exception_ptr error) noexcept {
  try {
    try {
      std::rethrow_exception(error);
    } catch (const Error& e) {
      failure_code_ = e.code();
      failure_ = e.what();
    } catch (const std::bad_alloc&) {
      failure_code_ = Errc::kNoMemory;
    } catch (const std::exception& e) {
      failure_ = e.what();
    } catch (...) {
      failure_ = "an exception that is not a std::exception";
    }
  } catch (...) {  // no memory for the text
  }
  failed_.store(true, std::memory_order_release);
  try {  // out of memory is one way a lane fails: its line must not end the process
    logf(LogLevel::kError, "%s stopped: %s", tag_.c_str(), failure().c_str());
  } catch (...) {
  }
  // Its workers hear of it now instead of at their timeout, and the server
  // stops (ServerImpl::run): no push to this lane's shards could be applied.
  try {
    disconnect_all();
  } catch (...) {
  }
}

void ServerLane::join() {
  if (thread_.joinable()) thread_.join();
}

size_t ServerLane::local_of(uint32_t shard) const {
  return setup_.partition->shard(setup_.server->index, shard).begin - lane_range_.begin;
}

// ---- data path ---------------------------------------------------------------

bool ServerLane::poll_inbox(Worker& w) {
  auto m = w.inbox->peek();
  if (!m) return false;
  // A pull waits its turn while this worker's last write-back is still being
  // sent (its buffers are reused): the lane waited for it, up to 30 s for a
  // worker that stopped reading, and served no one else meanwhile.
  if (m->header.type == static_cast<uint16_t>(MsgType::kPull) && !w.departed) try {
      if (w.writer->sending()) return false;
    } catch (const Error& e) {
      drop(w, (std::string("write-back failed: ") + e.what() + "; dropped from the clock").c_str());
      return true;
    }
  if (m->doorbell != w.inbox->expected())
    reject(w, RejectReason::kSequence,
           "doorbell " + std::to_string(m->doorbell) + " where sequence " + std::to_string(w.inbox->expected()) +
               " was due");
  else if (auto why = w.inbox->failed())
    reject(w, RejectReason::kLanding, *why);
  else
    handle(w, m->header, m->payload);
  if (!w.live) return true;
  w.mailbox.consumed_seq = w.inbox->consume();
  send_mailbox(w);
  return true;
}

void ServerLane::handle(Worker& w, const SlotHeader& h, const uint8_t* payload) {
  // Nothing in the header is trusted before check_slot() accepted it.
  const SlotRules rules{w.id,
                        w.inbox->expected(),
                        w.clock,
                        setup_.partition,
                        setup_.server->index,
                        setup_.first_shard,
                        setup_.first_shard + setup_.shards,
                        versions_.data(),
                        w.step,
                        w.stepped,
                        w.writer->landing_bytes(),
                        !w.writer->use_am(),
                        slot_layout_.payload_bytes};
  if (std::string why = check_slot(h, rules); !why.empty()) return reject(w, RejectReason::kHeader, why);
  const bool bf16 = h.flags & kFlagBf16;
  switch (static_cast<MsgType>(h.type)) {
    case MsgType::kPush:
    case MsgType::kInit: {
      if (setup_.config.check_nan) {
        if (bf16 ? !finite_bf16(reinterpret_cast<const uint16_t*>(payload), h.length)
                 : !finite_floats(reinterpret_cast<const float*>(payload), h.length)) {
          if (h.type == static_cast<uint16_t>(MsgType::kPush)) take(w);  // refused, not lost to a reconnect
          return reject(w, RejectReason::kNonFinite,
                        "gradient for shard " + std::to_string(h.shard) + " contains NaN or Inf");
        }
      }
      const size_t local = local_of(h.shard) + h.offset;
      preserve(h.shard - setup_.first_shard);
      if (h.type == static_cast<uint16_t>(MsgType::kInit)) {
        LaneCounters::add(counters_.inits);
        return store_->init(local, reinterpret_cast<const float*>(payload), h.length);
      }
      return apply_push(w, h, local, payload);
    }
    case MsgType::kPull:
      return write_back(w, h);
    case MsgType::kClock: {
      LaneCounters::add(counters_.worker_events);
      const uint64_t before = w.clock;
      ++w.step;
      w.clock = h.clock;
      w.clock_since = Clock::now();
      w.stall_logged = false;
      clock_advanced(before, w.clock);
      // Counted once its minimum moved, released: a reader that sees the count
      // (stats(), acquiring it) sees this lane's minimum as far. Another lane
      // may not have taken the clock yet: with several, stats().min_clock can lag.
      if (setup_.index == 0)
        counters_.clocks.store(counters_.clocks.load(std::memory_order_relaxed) + 1, std::memory_order_release);
      return;
    }
    case MsgType::kBye:
      return leave(w);
    case MsgType::kLanding:
      return add_landing(w, h, payload);
  }
}

std::unique_ptr<transport::RemoteRegion> ServerLane::import_landing(transport::Endpoint& ep,
                                                                    std::span<const uint8_t> descriptor,
                                                                    const std::string& peer, const std::string& what) {
  auto region = ep.import(transport::RegionDescriptor::parse(descriptor, peer + " " + what));
  if (!transport::allows(region->access(), Access::kRemoteWrite))
    throw Error(Errc::kPermissionDenied, what + " grants no remote write");
  return region;
}

// Memory the worker registered after connecting (docs/protocol.md "Landing in
// place"): it comes in sequence with the pulls, so the worker names it in the
// next one once the mailbox counts it.
void ServerLane::add_landing(Worker& w, const SlotHeader& h, const uint8_t* payload) {
  if (w.departed) return;  // no pull of its will be served
  try {
    auto landing = import_landing(*w.ep, {payload, h.length}, w.name, "landing region " + std::to_string(h.landing));
    // Put from the parameters themselves, an emulated put into it would hold
    // the lane until the worker drives its UCX (as lane_hello() decides): the
    // worker gets its copy now. Its pages fault in at its next write-back.
    if (!w.copy && !w.ep->rma_to_registered()) {
      auto copy = std::make_unique<WorkerCopy>(*context_, HostPages(copy_bytes_), copy_bytes_, *setup_.free_later);
      store_->attach(w.id, copy->floats());
      w.copy = std::move(copy);
      say_unplanned_copy(w);
    }
    w.writer->add_landing(std::move(landing));
  } catch (const Error& e) {
    return reject(w, RejectReason::kLanding, e.what());  // as its log line says: "landing region ..."
  }
  w.mailbox.landings = w.writer->landing_bytes().size();
}

void ServerLane::say_unplanned_copy(const Worker& w) {
  if (setup_.planned_copies || !setup_.said_unplanned_copy || setup_.said_unplanned_copy->exchange(true)) return;
  logf(LogLevel::kWarn,
       "rdmaps-server: warning: %s takes a copy of this server's range (%s on each of its %u lanes) that the memory "
       "plan did not count (its pulls are put into its own memory by emulated puts: give the server the workers' "
       "--put-landing to plan for it)",
       w.name.c_str(), transport::size_text(copy_bytes_).c_str(), setup_.lanes);
}

// A push of the worker's this lane consumed, whatever became of it: the count
// a reconnect's pushes_lost is reckoned against (the worker counts those it sent).
void ServerLane::take(Worker& w) {
  ++w.pushes;
  LaneCounters::add(counters_.taken[w.id]);
}

void ServerLane::apply_push(Worker& w, const SlotHeader& h, size_t local, const void* g) {
  const size_t k = h.shard - setup_.first_shard;
  uint64_t& version = versions_[k];
  // A shard's version counts workers' steps: the pieces of one step that touch
  // different floats of it (several tensors) count once, and the worker's own
  // earlier ones are nothing it has not seen. A piece over floats this step
  // already pushed (the same tensor again) is a step of its own.
  if (w.stepped.empty()) w.stepped.assign(setup_.shards, {});
  StepCover& mine = w.stepped[k];
  const uint32_t begin = h.offset, end = h.offset + h.length;
  const bool same_step = mine.continued_by(w.step, begin, end);
  const uint64_t tau = version - (same_step ? 1 : 0) - h.base_version;
  const Config& c = setup_.config;
  take(w);
  if (c.staleness_policy == StalenessPolicy::kDropAboveMax && tau > c.tau_max) {
    LaneCounters::add(counters_.dropped);
    return;
  }
  // A worker's rate of 0 still counts the step and updates momentum or the mean square, as torch's SGD does.
  float lr = (h.flags & kFlagWorkerRate) ? h.learning_rate : c.learning_rate;
  if (c.staleness_policy == StalenessPolicy::kScaleByTau && tau > 1) lr /= static_cast<float>(tau);
  const bool bf16 = (h.flags & kFlagBf16) != 0;
  const auto t0 = Clock::now();
  const uint64_t t = (same_step ? version : version + 1) - state_since_[k];
  store_->apply(update_, step_for(update_, lr, t, tau), w.id, local, g, bf16, h.length);
  const auto ns =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
  LaneCounters::add(counters_.apply_latency[duration_bucket(ns)]);
  LaneCounters::add(counters_.apply_ns, ns);
  if (same_step) {
    mine.add(begin, end);
  } else {
    ++version;
    mine.start(w.step, begin, end);
  }
  LaneCounters::add(counters_.pushes);
  const uint64_t bytes = h.length * (bf16 ? sizeof(uint16_t) : sizeof(float));
  LaneCounters::add(counters_.bytes_in, bytes);
  LaneCounters::add(counters_.bytes_from[w.id], bytes);
  LaneCounters::add(counters_.applied[w.id]);
  LaneCounters::add(counters_.staleness[std::min<uint64_t>(tau, kStalenessBuckets - 1)]);
  LaneCounters::add(counters_.staleness_sum, tau);
  LaneCounters::raise(counters_.staleness_max, tau);
}

// Copy fresh parameters into the worker's copy (what DC-ASGD compensates
// against), then put them from there: one copy serves both, and it does not
// change while in flight. Data, then fence, then the mailbox.
// A rule without a DC backup needs no copy where the write-back is a put: the
// lane puts the parameters themselves and waits until the put has read them
// before it applies anything else (over shared memory the put is the copy; on
// a NIC its DMA outruns the copy it replaces).
// Over active messages, in chunks of whole shards of about 1 MiB: tcp moves
// one chunk while the lane copies the next (the progress call drives it);
// write-backs ran about 30 % faster than in 4 MiB chunks. A put over shared
// memory is itself a CPU copy, so it goes whole (chunks measured 13 % slower
// there; docs/benchmarks.md). Nothing is applied in between, so the chunks
// make one consistent snapshot.
void ServerLane::write_back(Worker& w, const SlotHeader& h) {
  if (w.departed) return;  // nobody left to read it
  // The worker's next push to these shards is computed on what it gets now: a step of its own.
  if (!w.stepped.empty()) std::fill_n(w.stepped.begin() + (h.shard - setup_.first_shard), h.length, StepCover{});
  // The floats asked for: from `offset` in the first shard, `base_version`
  // of them (0: to the end of the last shard; docs/protocol.md "Write-back (pull)").
  const size_t local = local_of(h.shard) + h.offset;
  size_t floats = setup_.partition->shard(setup_.server->index, h.shard + h.length - 1).end - lane_range_.begin - local;
  if (h.base_version) floats = std::min<uint64_t>(floats, h.base_version);
  // Admission gave the worker a copy exactly where its write-backs need one.
  const auto direct = w.copy ? std::nullopt : store_->direct_source();
  const size_t shard_floats = setup_.config.shard_floats;
  const size_t chunk = w.writer->use_am()
                           ? std::max<size_t>(1, kWriteBackChunkBytes / (shard_floats * sizeof(float))) * shard_floats
                           : floats;
  const auto t0 = Clock::now();
  try {
    w.writer->wait_sent(kIoTimeout);
    // Into the worker's own memory where its pull asked for it (checked by check_slot()).
    const uint64_t offset =
        h.landing ? h.landing_offset
                  : receive_layout_.params_offset() + (lane_range_.begin - server_range_.begin + local) * sizeof(float);
    const uint64_t* versions = versions_.data() + (h.shard - setup_.first_shard);
    const uint64_t versions_offset = receive_layout_.versions_offset() + uint64_t{h.shard} * 8;
    if (direct) {
      w.writer->send_params(direct->params + local, floats, *direct->region, offset, h.landing);
      w.writer->send_versions(versions, h.length, versions_offset);
      w.writer->wait_sent(kIoTimeout);
    } else {
      const float* copy = w.copy->floats() + local;
      for (size_t done = 0; done < floats;) {
        // Chunks end on shard boundaries: the worker copies out whole shards as
        // they land. A put goes whole (a pull from inside a shard made a chunk
        // of 0 floats there, and the lane looped for good).
        const size_t n =
            w.writer->use_am() ? std::min(chunk - (local + done) % shard_floats, floats - done) : floats - done;
        store_->snapshot(w.id, local + done, n);
        w.writer->send_params(copy + done, n, w.copy->region(), offset + done * sizeof(float), h.landing);
        done += n;
        if (done < floats) context_->progress();
      }
      w.writer->send_versions(versions, h.length, versions_offset);
    }
  } catch (const Error& e) {
    // The worker died with a write-back in flight: drop it, keep serving the others.
    return drop(w, (std::string("write-back failed: ") + e.what() + "; dropped from the clock").c_str());
  }
  const auto ns =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
  LaneCounters::add(counters_.write_back_latency[duration_bucket(ns)]);
  LaneCounters::add(counters_.write_back_ns, ns);
  w.mailbox.pull_done = h.seq;
  w.mailbox.pull_stamp = min_clock_;
  LaneCounters::add(counters_.pulls);
  LaneCounters::add(counters_.bytes_out, floats * sizeof(float));
  // The credit for this message goes out with the same mailbox (poll_inbox).
}

// Without waiting: a worker that stopped reading (its earlier sends still
// queued) held the lane up to 30 s per mailbox, every worker of it waiting.
// Its mailbox goes, the latest, once the one before went (send_owed_mailboxes).
void ServerLane::send_mailbox(Worker& w) {
  if (!w.live || w.departed) return;
  try {
    if (w.writer->try_send_mailbox(w.mailbox)) {
      w.mailbox_owed = false;
      return;
    }
    if (!w.mailbox_owed) {
      w.mailbox_owed = true;
      owed_.push_back(static_cast<uint32_t>(&w - workers_.data()));
    }
  } catch (const Error& e) {
    drop(w, e.what());
  }
}

bool ServerLane::send_owed_mailboxes() {
  owed_scratch_.swap(owed_);  // sending may owe again, or drop a worker, which sends to the others
  bool any = false;
  for (const uint32_t i : owed_scratch_) {
    Worker& w = workers_[i];
    if (!w.mailbox_owed) continue;
    w.mailbox_owed = false;
    send_mailbox(w);
    any |= !w.mailbox_owed;
  }
  owed_scratch_.clear();
  return any;
}

// Only the last worker at the minimum moves it: a scan of every worker per
// clock made each step cost O(workers^2) (about 1 ms a step at 1024 workers).
void ServerLane::clock_advanced(uint64_t before, uint64_t now) {
  if (now > before && (before > min_clock_ || (before == min_clock_ && at_min_clock_ > 1))) {
    if (before == min_clock_) --at_min_clock_;
    if (now > counters_.max_clock.load(std::memory_order_relaxed))
      counters_.max_clock.store(now, std::memory_order_relaxed);
    return;
  }
  update_min_clock();
}

void ServerLane::update_min_clock() {
  uint64_t m = UINT64_MAX, fastest = 0;
  uint32_t at_min = 0;
  for (const auto& w : workers_)
    if (w.live || !w.connected_once) {  // not yet connected: holds at 0, or at its clock in a resumed checkpoint
      if (w.clock < m) m = w.clock, at_min = 0;
      if (w.clock == m) ++at_min;
      fastest = std::max(fastest, w.clock);
    }
  at_min_clock_ = at_min;
  if (m == UINT64_MAX) m = min_clock_;
  counters_.max_clock.store(std::max(fastest, m), std::memory_order_relaxed);
  counters_.min_clock.store(m, std::memory_order_relaxed);
  if (m == min_clock_) return;
  min_clock_ = m;
  min_clock_since_ = Clock::now();
  holding_ = holder();
  // min_clock_, not m: a send that fails drops its worker, which may move
  // the minimum again (and send it to all); the rest must not get the older one.
  for (auto& w : workers_) {
    if (!w.live) continue;
    w.mailbox.min_clock = min_clock_;
    w.mailbox.holding = holding_;
    send_mailbox(w);
  }
}

// One that never came first: that says more than a live one beside it.
uint64_t ServerLane::holder() const {
  for (const auto& w : workers_)
    if (!w.connected_once && w.clock == min_clock_) return holding_of(w.id, true);
  for (const auto& w : workers_)
    if (w.live && w.clock == min_clock_) return holding_of(w.id, false);
  return 0;
}

// Who holds the clock changes without the minimum moving (one of two at it
// clocks on): sending that with every clock cost a mailbox per worker each
// time. A wait that lasts is what needs it, so it is brought up to date once
// the clock held a second, for the waiting workers' timeout to name.
void ServerLane::publish_holding() {
  const auto now = Clock::now();
  if (now - min_clock_since_ < std::chrono::seconds(1) || now - holding_checked_ < std::chrono::milliseconds(500))
    return;
  holding_checked_ = now;
  const uint64_t h = holder();
  if (h == holding_) return;
  holding_ = h;
  for (auto& w : workers_) {
    if (!w.live) continue;
    w.mailbox.holding = holding_;
    send_mailbox(w);
  }
}

// Active-message push path: land the payload in the same inbox slot a put
// would have filled; the doorbell rings once the payload is complete.
void ServerLane::on_push_am(transport::AmMessage& m) {
  auto it = by_endpoint_.find(m.from);
  if (it == by_endpoint_.end()) return;  // unknown sender: dropped by the transport
  Worker& w = workers_[it->second];
  if (!w.live) return;
  if (std::string why = w.inbox->land(*context_, m); !why.empty()) reject(w, RejectReason::kLanding, why);
  landings_maybe_ = true;
}

bool ServerLane::complete_landings() {
  // Each turn of the loop looked at every worker, on the put path too, where none lands anything.
  if (!landings_maybe_) return false;
  bool any = false, pending = false;
  for (auto& w : workers_)
    if (w.live && w.inbox->landing()) {
      any |= w.inbox->complete();
      pending |= w.inbox->landing();
    }
  landings_maybe_ = pending;
  return any;
}

void ServerLane::run() {
  FlushDenormals flush;  // this thread applies updates: subnormals must not slow it
  // Poll while busy; when idle, sleep: one-sided doorbells raise no event, so
  // a push is noticed only at the next wake. Steps of 20 us while the lane has
  // been idle up to ~1.3 ms (the gaps of a busy job), then 1/64 of the time
  // idle, at most 1 ms: a push after a gap G is noticed at most G/64 late,
  // and an idle lane takes 1.5 % of a core instead of 17 % (each wake costs
  // ~20 us of CPU on this VM; docs/protocol.md, "Idle server").
  transport::IdleBackoff idle({.spin = 50us, .yield = 0us, .sleep = 20us, .max_sleep = 1ms, .share = 64});
  // Where lanes share cores with each other and with workers, a lane waking
  // to find nothing must not preempt the one doing the work; a single lane is
  // the server's bottleneck and takes its core back at once (measured in
  // docs/benchmarks.md "Server threads").
  transport::NoWakeupPreemption quiet(setup_.lanes > 1);
  uint32_t iteration = 0;
  Clock::time_point last_housekeeping{};
  while (!stop_.load(std::memory_order_relaxed)) {
    bool busy = snapshot_step();
    busy |= context_->progress() != 0;
    busy |= complete_landings();
    for (auto& w : workers_)
      if (w.live) busy |= poll_inbox(w);
    if (!owed_.empty()) busy |= send_owed_mailboxes();
    // One that check_soon() names while the workers are checked sets it again: seen next turn.
    if (any_suspect_.load(std::memory_order_relaxed) && any_suspect_.exchange(false, std::memory_order_acquire))
      check_suspects();
    if (any_forsaken_.load(std::memory_order_relaxed) && any_forsaken_.exchange(false, std::memory_order_acquire))
      take_forsaken();
    // Connection set-up and liveness (a system call per worker) at most every
    // kHousekeepingEvery when idle: with hundreds of workers, doing them every
    // idle round delayed the next push by a poll() per worker.
    if ((++iteration & 0xff) == 0 || (!busy && Clock::now() - last_housekeeping >= kHousekeepingEvery)) {
      const auto t0 = Clock::now();
      last_housekeeping = t0;
      pending_.poll(*listener_, [this](std::unique_ptr<transport::Endpoint> ep, std::vector<uint8_t> message) {
        admit(std::move(ep), message);
      });
      check_liveness();
      // How long connection set-up kept this lane from its inboxes (docs/security.md).
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
      if (static_cast<uint64_t>(us) > counters_.longest_setup_us.load(std::memory_order_relaxed))
        counters_.longest_setup_us.store(static_cast<uint64_t>(us), std::memory_order_relaxed);
      done_.store(setup_.server->exit_when_done && all_done(), std::memory_order_release);
    }
    idle.pause(busy);
  }
}

}  // namespace rdmaps::ps
