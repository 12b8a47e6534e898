// The worker: declaring and connecting, waiting on its lanes (credits, clocks,
// write-backs, landing regions offered late) and the SSP clock;
// rdmaps::Client forwards to it. Pushes are in client_push.cc, pulls in
// client_pull.cc.
#include <algorithm>
#include <optional>
#include <thread>

#include "rdmaps/log.h"
#include "src/api/log_sink.h"
#include "src/ps/am_ids.h"
#include "src/ps/client_impl.h"
#include "src/ps/context_options.h"
#include "transport/cancel.h"
#include "transport/file_limit.h"
#include "transport/idle_backoff.h"
#include "transport/process_id.h"

namespace rdmaps::ps {
namespace {

// "; worker 2 holds it, at clock 4" (Mailbox::holding), for an SSP wait's timeout.
std::string holding_text(uint64_t holding, uint64_t min_clock) {
  if (holding == 0) return "";
  const uint64_t worker = (holding & ~kHoldingNeverReached) - 1;
  if (holding & kHoldingNeverReached)
    return "; worker " + std::to_string(worker) +
           " holds it: it never reached this server lane (did it start, and "
           "did it end or fail before it connected? its own output says)";
  return "; worker " + std::to_string(worker) + " holds it, at clock " + std::to_string(min_clock);
}

}  // namespace

void ClientImpl::declare(const std::string& name, size_t floats) {
  if (partition_) throw Error(Errc::kInvalidArgument, "declare('" + name + "') after connect()");
  if (name.empty()) throw Error(Errc::kInvalidArgument, "declare: a tensor needs a name");
  if (floats == 0) throw Error(Errc::kInvalidArgument, "declare('" + name + "'): a tensor needs at least one float");
  if (floats > kMaxTensorFloats)
    throw Error(Errc::kInvalidArgument, "declare('" + name + "'): " + std::to_string(floats) +
                                            " floats, over the protocol's " + std::to_string(kMaxTensorFloats) +
                                            " per tensor");
  if (name.size() > kMaxTensorName)
    throw Error(Errc::kInvalidArgument, "declare: a tensor name of " + std::to_string(name.size()) +
                                            " bytes is longer than the " + std::to_string(kMaxTensorName) +
                                            " the protocol carries");
  if (!declared_names_.insert(name).second) throw Error(Errc::kInvalidArgument, "tensor '" + name + "' declared twice");
  declared_.push_back({name, floats});
}

void ClientImpl::connect() {
  if (partition_) {
    // Connected once: again is nothing to do, unless a server was lost since,
    // where "ok" would read as a reconnect that did not happen.
    for (const auto& link : links_)
      if (link.down())
        throw Error(Errc::kPeerGone,
                    "connect(): server " + link.address + " was lost after this client connected; connect() does " +
                        (config_.reconnect_ms == 0
                             ? "not connect again (--reconnect SEC does; else make a new client)"
                             : "not connect again; the next call that needs it reconnects (--reconnect)"));
    return;
  }
  if (declared_.empty()) throw Error(Errc::kInvalidArgument, "connect() with no tensor declared");
  if (declared_.size() > kMaxTensors)  // short names fit the Hello's bytes: the server refused it, saying less
    throw Error(Errc::kInvalidArgument, "connect(): " + std::to_string(declared_.size()) +
                                            " tensors declared, over the " + std::to_string(kMaxTensors) +
                                            " a server accepts: declare fewer (one per layer, say)");
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
  copy_versions_.assign(partition_->segments(), 0);
  const uint64_t clock = clock_;
  // A worker holds a few files per server lane: 64 servers of 16 lanes pass
  // the usual soft limit of 1024 (docs/cluster.md "Waits and failures").
  transport::raise_open_file_limit();
  const transport::CancelScope cancel(&interrupted_);  // interrupt() reaches a wait on a silent server
  try {
    // Every server on loopback: UCX stays there too (ContextOptions::loopback_only).
    const bool loopback_only = std::all_of(options_.servers.begin(), options_.servers.end(), [](const std::string& s) {
      try {
        return transport::SockAddr::parse(s).is_loopback();
      } catch (const Error&) {
        return false;  // the connect names it
      }
    });
    context_ = transport::create_context(
        context_options(config_, "rdmaps-worker-" + std::to_string(options_.worker), loopback_only));
    context_->set_am_handler(kAmWriteBack, [this](transport::AmMessage& m) { on_write_back(m); });
    register_with_transport();  // before the lanes are given its keys
    // Every server asked first: a refusal or an unreachable server found
    // after joining others had ended (a job of one worker) or fixed their job.
    if (options_.servers.size() > 1) probe_all();
    links_.resize(options_.servers.size());
    for (uint32_t i = 0; i < links_.size(); ++i) {
      const Welcome w = connect_one(i, transport::IfRefused::kRetry, Clock::time_point::max());
      links_[i].instance = w.instance;
      if (!job_) job_ = w.job;  // one server: no probe named it
      // What the server holds of this id (a predecessor's pushes, a resumed
      // checkpoint's): a later reconnect counts as lost what it no longer holds.
      links_[i].posted = links_[i].held_at_connect = w.pushes_held;
      stats_.push_paths.push_back(links_[i].use_am ? "am" : "put");
      stats_.servers_resumed += w.resumed;
      stats_.servers_holding += w.holding;
    }
    end_probes();  // joined every server
    if (options_.worker == 0 && stats_.servers_resumed > 1) warn_of_resumes_apart();
  } catch (...) {
    // Not connected: a later connect() starts over (and is refused again if
    // the reason stands) instead of finding a half-made connection. The lanes
    // that admitted this worker may still put into its receive regions until
    // the context's last progress (Context::keep_until_end).
    by_endpoint_.clear();
    if (context_) try {
        auto held = std::make_shared<std::vector<ServerLink>>(std::move(links_));
        for (auto& link : *held)
          for (auto& lane : link.lanes)
            if (lane.ep) lane.ep->close_later(held);
      } catch (const std::bad_alloc&) {
        // Out of memory: they go now, as before they were kept.
      }
    links_.clear();
    end_probes();  // the servers not yet reached count this worker lost, as those reached do
    for (Registered& r : registered_) r.region.reset();
    context_.reset();
    partition_.reset();
    stats_.push_paths.clear();
    stats_.servers_resumed = 0;
    stats_.servers_holding = 0;
    clock_ = clock;
    job_ = 0;
    throw;
  }
}

// Each server resumes its own newest checkpoint that reads back: one whose
// newest was damaged or missing resumed an older one, and the model's ranges
// were of moments far apart without a word. What each holds of this worker's
// pieces spans a range of its steps: a step sends each of the server's
// segments (a tensor's part in a shard) once, or, gathered, each shard once.
// Warned of only where those ranges lie apart by more than periodic
// checkpoints, taken by each server's own timer, would.
void ClientImpl::warn_of_resumes_apart() const {
  uint64_t lowest_most = UINT64_MAX, highest_least = 0;
  std::string held;
  for (uint32_t i = 0; i < links_.size(); ++i) {
    const Range range = partition_->server_range(i);
    uint64_t segments = 0;
    for (uint32_t t = 0; t < partition_->tensors().size(); ++t) {
      const Range part = overlap(partition_->tensor(t), range);
      if (part.begin < part.end)
        segments += (part.end - 1 - range.begin) / partition_->shard_floats() -
                    (part.begin - range.begin) / partition_->shard_floats() + 1;
    }
    const uint64_t pieces = links_[i].held_at_connect;
    const uint64_t least = pieces / std::max<uint64_t>(1, segments),
                   most = pieces / std::max<uint64_t>(1, links_[i].shards);
    lowest_most = std::min(lowest_most, most), highest_least = std::max(highest_least, least);
    held += (i ? ", server " : "server ") + std::to_string(i) + " (" + links_[i].address + ") " +
            (least == most ? std::to_string(most) : std::to_string(least) + " to " + std::to_string(most));
  }
  if (highest_least <= lowest_most + std::max<uint64_t>(2, highest_least / 10)) return;
  logf(LogLevel::kWarn,
       "rdmaps worker 0: the servers resumed checkpoints of different moments: of this worker's steps, %s: a server "
       "whose newest checkpoint was damaged or missing resumed an older one (its log says which), and each range of "
       "the model goes on from its own moment (to resume one moment, give every server checkpoints of it)",
       held.c_str());
}

void ClientImpl::await_pull(ServerLink& link, const Lane& lane, uint64_t seq, Range fetched, const ServerLink* only,
                            bool stamp_shards) {
  const Mailbox& box = link.mailbox(lane);
  wait([&] { return link.load(box.pull_done) >= seq; },
       [&] { return "waiting for parameters from server " + link.address + " lane " + std::to_string(lane.index); },
       only);
  // Too new a stamp would let skip_pulls serve a copy older than the bound; an
  // older one (the shard's last) only fetches sooner.
  if (!stamp_shards) return;
  const uint64_t stamp = link.load(box.pull_stamp);
  for (uint32_t k = shard_of(link, fetched.begin); k <= shard_of(link, fetched.end - 1); ++k) {
    const Range extent = partition_->shard(link.index, k);
    if (extent.begin < fetched.begin || extent.end > fetched.end) continue;  // part of it: keeps its older stamp
    link.shard_stamp[k] = stamp;
    link.have_shard[k] = true;
  }
}

// Progress, hand each payload that landed to the running pull, and publish a
// mailbox that arrived by active message once every payload sent before it has
// landed.
bool ClientImpl::progress(const ServerLink* only) {
  bool moved = context_->progress() != 0;
  for (auto& link : links_)
    if (link.use_am && !link.write_back_failed())  // said once: its other lanes' failures are that one's
      for (auto& lane : link.lanes) try {
          moved |= lane.write_back.publish(*link.receive, [&](uint64_t offset, uint64_t bytes, bool in_place) {
            deliver(link, offset, bytes, in_place);
          });
        } catch (const Error& e) {
          // Its lane publishes no mailbox any more (every later pull waited out
          // its timeout): the connection is down, for the call's recovery to
          // reconnect (its server died, most likely) or to say why.
          link.write_back_error = "worker " + std::to_string(options_.worker) + ": a write-back from server " +
                                  link.address + " lane " + std::to_string(lane.index) + " did not land: " + e.what();
          // A wait on another server (a reconnect's re-pull) goes on: this
          // one's failure is not that attempt's, and the recovery finds it down.
          if (only && only != &link) break;
          throw Error(e.code(), link.write_back_error);
        }
  return moved;
}

template <typename Done, typename What>
void ClientImpl::wait(Done&& done, What&& what, const ServerLink* only) {
  const auto deadline = this->deadline();
  const auto bound = bound_of(deadline);  // what a timeout names
  transport::IdleBackoff idle;  // a long wait (the clock bound) must not take the core of the one it waits for
  while (!done()) {
    idle.pause(progress(only));
    const auto due = idle.checks_due();
    if (due.deadline && interrupted_.load(std::memory_order_relaxed))
      throw Error(Errc::kCancelled, "worker " + std::to_string(options_.worker) + ": " + what() +
                                        ": interrupted (the client was interrupted; it takes no more calls)");
    if (due.deadline) {
      const auto now = Clock::now();
      if (now > deadline)
        throw Error(Errc::kTimeout, "worker " + std::to_string(options_.worker) + ": " + what() + " for " +
                                        std::to_string(bound.count()) + " ms");
      if (now - last_publish_ > kPublishEvery) publish();
    }
    if (due.peers) {
      for (auto& link : links_) {
        if (only && only != &link) continue;
        if (link.write_back_failed()) throw Error(Errc::kPeerGone, link.write_back_error);
        for (auto& lane : link.lanes) {
          // A failed endpoint whose bootstrap socket stays open (a path down,
          // UCX's own timeout) is as gone: waiting out the timeout told nothing more.
          if (lane.ep->peer_closed() || lane.ep->failed())
            throw Error(Errc::kPeerGone, "server " + link.address +
                                             (lane.ep->peer_closed()
                                                  ? " closed the connection"
                                                  : " lane " + std::to_string(lane.index) + ": the connection failed") +
                                             " while worker " + std::to_string(options_.worker) + " was " + what());
        }
      }
    }
  }
}

void ClientImpl::wait_for_copy(cuda::StagingRing& ring, int buffer) {
  wait([&] { return ring.ready(buffer); }, [] { return std::string("waiting for a device-to-host staging copy"); });
}

void ClientImpl::complete(std::vector<transport::Request>& requests) {
  const auto by = deadline();
  const auto bound = bound_of(by);
  for (auto& r : requests) r.wait_until(by, bound, &interrupted_);
}

uint64_t ClientImpl::post(ServerLink& link, Lane& lane, MsgType type, uint32_t shard, uint64_t base_version,
                          uint32_t offset, uint32_t length, const void* payload,
                          std::vector<transport::Request>& inflight, uint16_t flags, uint32_t landing,
                          uint64_t landing_offset) {
  // Credits: a slot is reused only after the lane consumed its last message.
  if (!lane.inbox->has_credit(link.load(link.mailbox(lane).consumed_seq)))
    // Only this server's closing ends it: a credit comes from it alone, and
    // leaving, another server's closing kept the Bye from a live one.
    wait([&] { return lane.inbox->has_credit(link.load(link.mailbox(lane).consumed_seq)); },
         [&] {
           return "waiting for an inbox credit from server " + link.address + " lane " + std::to_string(lane.index);
         },
         &link);
  SlotHeader h{};
  h.magic = kSlotMagic;
  h.type = static_cast<uint16_t>(type);
  h.flags = flags;
  h.worker = options_.worker;
  h.shard = shard;
  h.base_version = base_version;
  // A clock message carries the next clock of its lane, which may be behind
  // the worker's (see clock()).
  h.clock = type == MsgType::kClock ? lane.clock_sent + 1 : clock_;
  h.offset = offset;
  h.length = length;
  if (type == MsgType::kPush && learning_rate_) {
    h.learning_rate = *learning_rate_;
    h.flags |= kFlagWorkerRate;
  }
  h.landing = landing;
  h.landing_offset = landing_offset;
  const size_t elem = type == MsgType::kLanding ? 1 : (flags & kFlagBf16) ? sizeof(uint16_t) : sizeof(float);
  const size_t bytes = payload ? length * elem : 0;
  return lane.inbox->post(h, payload, bytes, inflight);
}

// Each lane takes landing regions in order and counts them in its mailbox;
// a refused one (its key did not unpack there) stops the offers to that lane,
// whose pulls into it and later ones are then copied as before. A descriptor
// larger than a slot (shards of a few floats) is not offered either.
void ClientImpl::offer_late_landings() {
  const size_t offerable = std::min(registered_.size(), kMaxLandingRegions);
  std::vector<std::vector<uint8_t>> descriptors;  // the payloads, until their puts completed
  std::vector<transport::Request>& inflight = inflight_;
  for (;;) {
    try {
      abandon_pending(inflight);  // none, unless a call ended by something else than an Error left some
      descriptors.clear();
      struct Asked {
        ServerLink* link;
        Lane* lane;
        uint64_t seq;  // of the last region offered: the mailbox that consumed it counts what the lane took
      };
      std::vector<Asked> asked;
      for (auto& link : links_) {
        if (!link.offers_landings) continue;
        for (auto& lane : link.lanes) {
          if (lane.landings != lane.landings_offered || lane.landings_offered >= offerable) continue;
          uint64_t seq = 0;
          for (; lane.landings_offered < offerable; ++lane.landings_offered) {
            descriptors.push_back(
                registered_[lane.landings_offered].region->descriptor(transport::Access::kRemoteWrite).serialize());
            if (descriptors.back().size() > config_.shard_floats * sizeof(float)) break;
            seq = post(link, lane, MsgType::kLanding, 0, 0, 0, static_cast<uint32_t>(descriptors.back().size()),
                       descriptors.back().data(), inflight, 0, static_cast<uint32_t>(lane.landings_offered + 1));
          }
          if (seq) asked.push_back({&link, &lane, seq});
        }
      }
      complete(inflight);
      inflight.clear();
      for (const Asked& a : asked) {
        const Mailbox& box = a.link->mailbox(*a.lane);
        // Not "until a rejection is counted": a push of this worker rejected
        // meanwhile counted too, and the regions it had not yet taken were
        // never offered again.
        const auto taken = [&] { return a.link->load(box.landings) >= a.lane->landings_offered; };
        wait([&] { return taken() || a.link->load(box.consumed_seq) >= a.seq; },
             [&] {
               return "waiting for server " + a.link->address + " lane " + std::to_string(a.lane->index) +
                      " to take landing region " + std::to_string(a.lane->landings_offered);
             },
             a.link);
        // One put wrote both words, in no promised order: a count still short
        // is a refusal once that put is surely whole.
        for (auto until = Clock::now() + std::chrono::milliseconds(2); !taken() && Clock::now() < until;) progress();
        a.lane->landings = std::min<size_t>(a.link->load(box.landings), a.lane->landings_offered);
        if (a.lane->landings < a.lane->landings_offered)
          logf(LogLevel::kWarn,
               "rdmaps worker %u: server %s lane %u refused landing region %zu: pulls into it are copied",
               options_.worker, a.link->address.c_str(), a.lane->index, a.lane->landings + 1);
      }
      return;
    } catch (const Error& e) {
      // A send recover() gives up on may still read its descriptor: kept (a
      // moved vector keeps its bytes where they are).
      try {
        for (auto& d : descriptors) abandoned_payloads_.push_back(std::move(d));
      } catch (const std::bad_alloc&) {
        abandon_pending(inflight);
        throw;
      }
      recover(e, inflight);  // a server that came back took every region in its LaneHello
    }
  }
}

void ClientImpl::clock(bool barrier) {
  require_connected(barrier ? "barrier" : "clock");
  flush_gathered();  // the clock goes behind every push of the step
  // Timed once the flush went: a clock that failed there ended no iteration.
  const auto now = Clock::now();
  // A barrier ends no step of training (rdmaps-train's end barrier, right
  // after the last clock, set the step-time gauge to a microsecond for good).
  if (stats_.clocks && !barrier)
    stats_.last_step_seconds = std::chrono::duration<double>(now - last_clock_call_).count();
  last_clock_call_ = now;
  ++clock_;
  ++stats_.clocks;
  std::vector<transport::Request>& inflight = inflight_;
  for (;;) {
    try {
      // Every lane gets the clock, behind this worker's pushes to it (a lane
      // reconnected after its server restarted was told it when connecting).
      // A lane further behind gets each clock in between: a rejoining worker
      // goes on from the furthest start clock its servers gave, and a lane
      // takes only the clock after the last it saw.
      abandon_pending(inflight);
      for (auto& link : links_)
        for (auto& lane : link.lanes)
          for (; lane.clock_sent < clock_; ++lane.clock_sent)
            post(link, lane, MsgType::kClock, 0, 0, 0, 0, nullptr, inflight);
      complete(inflight);
      inflight.clear();
      // Past a barrier the cache is as old as it was, the bound now 0: the next pull fetches.
      if (barrier) expire_cache();
      const uint64_t s = barrier ? 0 : config_.staleness;
      if (s == kInfiniteStaleness || clock_ <= s) return;
      // SSP: iteration c+1 begins only once every live worker reached c - s, as every lane saw it.
      const uint64_t need = clock_ - s;
      clock_wait_since_ = Clock::now();
      for (auto& link : links_)
        for (auto& lane : link.lanes) try {
            wait([&] { return link.load(link.mailbox(lane).min_clock) >= need; },
                 [&] {
                   return "at clock " + std::to_string(clock_) + " waiting for the slowest worker to reach clock " +
                          std::to_string(need) + " (server " + link.address + " lane " + std::to_string(lane.index) +
                          ")";
                 });
          } catch (const Error& e) {
            if (e.code() != Errc::kTimeout) throw;
            // Which worker: the server's own log says so, this worker's error did not.
            throw Error(Errc::kTimeout, e.what() + holding_text(link.load(link.mailbox(lane).holding),
                                                                link.load(link.mailbox(lane).min_clock)));
          }
      end_clock_wait();
      return;
    } catch (const Error& e) {
      end_clock_wait();  // a wait that ended in an error (a timeout, a server lost) was waited all the same
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
// One call at a time, from the process that made the client: two threads
// inside one client tripped UCX's own assertion, or corrupted it where that
// is compiled out; a read of the counters raced the call that changes them;
// a forked child's calls went out on the parent's connections (its counters
// are the parent's too).
class Turn {
 public:
  Turn(ClientImpl& impl, const char* what) : impl_(impl) {
    if (impl.owner_pid_ != transport::this_process_id())
      throw Error(Errc::kInvalidArgument, std::string(what) + ": this client belongs to process " +
                                              std::to_string(impl.owner_pid_) +
                                              ", not this forked child: a child makes its own client");
    if (impl.in_call_.exchange(true, std::memory_order_acquire))
      throw Error(Errc::kInvalidArgument,
                  std::string(what) +
                      ": another call of this client is in progress on another thread (a "
                      "client serves one thread at a time; only an interrupt may come from another)");
  }
  ~Turn() { impl_.in_call_.store(false, std::memory_order_release); }
  Turn(const Turn&) = delete;
  Turn& operator=(const Turn&) = delete;

 private:
  ClientImpl& impl_;
};

// Every call: its turn, from the process that made the client (a forked
// child's calls went out on the parent's connections and broke its
// sequence; the child is told so even where the fork caught another thread
// in a call), none after interrupt(). Publishes the stats for the metrics
// endpoint when the call returns or throws.
class Call {
 public:
  Call(ClientImpl& impl, const char* what, bool publish = true) : impl_(impl), publish_(publish) {
    turn_.emplace(impl, what);
    if (impl.interrupted_.load(std::memory_order_relaxed))
      throw Error(Errc::kCancelled,
                  std::string(what) + ": the client was interrupted and takes no more calls: make another one");
    if (const auto& broken = impl.broken())
      throw Error(broken->code(), std::string(what) + ": this client cannot go on: " + broken->what());
  }
  ~Call() {
    try {
      if (publish_) impl_.publish();
    } catch (...) {  // out of memory for the scrape's copy: it stays as it was; thrown here, it aborted the process
    }
  }
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

 private:
  ClientImpl& impl_;
  bool publish_;
  std::optional<Turn> turn_;  // released last, after the publish
};
}  // namespace

Client::Client(const ClientOptions& options) : impl_(std::make_unique<ClientImpl>(options)) {}
Client::~Client() {
  // In a forked child the connections, shared memory and UCX's file
  // descriptors are the parent's: closing them here would say goodbye for the
  // parent and tear down what it still uses. The child's exit frees the memory.
  if (impl_ && impl_->owner_pid_ != transport::this_process_id()) {
    static_cast<void>(impl_.release());
    return;
  }
  // A call on another thread (a watchdog destroying a client whose clock
  // hangs) used what this frees: interrupted, and waited for (each wait sees
  // interrupt() within ~50 ms); the turn then stays with the goodbye.
  if (impl_ && impl_->in_call_.exchange(true, std::memory_order_acquire)) {
    impl_->interrupted_.store(true, std::memory_order_relaxed);
    if (in_log_sink()) {
      // From a log callback the call may be this thread's own, or wait to log
      // behind this callback: waiting would never end, freeing would pull its
      // memory from under it. It is interrupted, and its memory stays.
      logf(LogLevel::kError,
           "rdmaps: worker %u: destroyed from a log callback while a call of it was in progress: that call was "
           "interrupted and the client's memory is left in place (destroy it outside the callback)",
           impl_->worker());
      static_cast<void>(impl_.release());
      return;
    }
    logf(LogLevel::kWarn,
         "rdmaps: worker %u: destroyed while a call of it was in progress on another thread: that call was "
         "interrupted and waited for (interrupt it, and destroy once it returned)",
         impl_->worker());
    while (impl_->in_call_.exchange(true, std::memory_order_acquire))
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}
void Client::declare(const std::string& name, size_t floats) {
  Call c{*impl_, "declare", false};
  impl_->declare(name, floats);
}
void Client::connect() {
  Call c{*impl_, "connect"};
  impl_->connect();
}
void Client::init(const std::string& name, std::span<const float> values) {
  Call c{*impl_, "init"};
  impl_->send(name, values, MsgType::kInit);
}
void Client::push(const std::string& name, std::span<const float> gradient) {
  Call c{*impl_, "push"};
  impl_->send(name, gradient, MsgType::kPush);
}
void Client::pull(const std::string& name, std::span<float> out) {
  Call c{*impl_, "pull"};
  const PullTarget one{name, out};
  impl_->pull(std::span<const PullTarget>(&one, 1));
}
void Client::pull(std::span<const PullTarget> targets) {
  Call c{*impl_, "pull"};
  impl_->pull(targets);
}
void Client::register_memory(std::span<float> memory) {
  Call c{*impl_, "register_memory", false};
  impl_->register_memory(memory);
}
void Client::clock() {
  Call c{*impl_, "clock"};
  impl_->clock(false);
}
void Client::barrier() {
  Call c{*impl_, "barrier"};
  impl_->clock(true);
}
void Client::expire_cache() {
  Turn t{*impl_, "expire_cache"};
  impl_->expire_cache();
}
void Client::interrupt() { impl_->interrupted_.store(true, std::memory_order_relaxed); }
void Client::set_learning_rate(std::optional<float> lr) {
  Call c{*impl_, "set_learning_rate", false};
  impl_->set_learning_rate(lr);
}
uint64_t Client::clock_value() const {
  Turn t{*impl_, "clock_value"};
  return impl_->clock_value();
}
ClientStats Client::stats() const {
  Turn t{*impl_, "stats"};
  return impl_->stats();
}
uint64_t Client::messages_rejected() const {
  Turn t{*impl_, "messages_rejected"};
  return impl_->messages_rejected();
}
std::string Client::metrics_address() const { return impl_->metrics_address(); }

}  // namespace rdmaps
