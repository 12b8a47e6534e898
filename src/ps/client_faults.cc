// A worker's side of faults: reconnecting to a server that restarted (or
// dropped the connection), fetching what it holds, and leaving with a
// handshake so that the last pushes are taken in.
#include <algorithm>
#include <cstdio>
#include <iterator>
#include <optional>
#include <string_view>
#include <thread>

#include "rdmaps/log.h"
#include "src/ps/client_impl.h"
#include "src/ps/worker_copy.h"
#include "transport/cancel.h"
#include "transport/idle_backoff.h"

namespace rdmaps::ps {

using namespace std::chrono_literals;
// How long a leaving worker waits for its Byes to be acknowledged.
constexpr std::chrono::milliseconds kLeaveTimeout = 5s;
// How soon a reconnecting worker notices interrupt() between attempts.
constexpr std::chrono::milliseconds kInterruptCheck = 20ms;

namespace {
std::string seconds(uint64_t ms) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", static_cast<double>(ms) / 1000.0);
  return text;
}

Error refused_for_good(const ServerLink& link, const Error& e) {
  return Error(Errc::kPeerGone,
               "server " + link.address +
                   " came back and refuses this worker in a way no retry can pass, so the "
                   "reconnect stops (was it restarted with another configuration, secret or build?): " +
                   e.what());
}
}  // namespace

void ClientImpl::abandon_pending(std::vector<transport::Request>& requests) noexcept {
  for (auto& r : requests) {
    if (!r.pending()) continue;
    try {
      abandoned_.push_back(std::move(r));
    } catch (const std::bad_alloc&) {
    }
  }
  requests.clear();
}

void ClientImpl::recover(const Error& cause, std::vector<transport::Request>& inflight) {
  // Every send under way, the failed call's and those of the call it ran in:
  // a push whose gathered run failed to flush had pieces of its own under way
  // (send()'s inflight_), and the reconnect below closed the endpoints they
  // referred to (their wait then read freed memory). Each list is waited for
  // and then emptied: what is still under way goes to abandoned_, which a
  // disconnect retires with its endpoints.
  std::vector<transport::Request>* lists[] = {&inflight, &inflight_, &gather_inflight_};
  const auto each = [&](auto&& f) {
    for (size_t i = 0; i < std::size(lists); ++i)
      if (std::find(lists, lists + i, lists[i]) == lists + i) f(*lists[i]);
  };
  const auto abandon_all = [&] { each([&](std::vector<transport::Request>& l) { abandon_pending(l); }); };
  // The server of a send still under way on a connection that stays (one
  // that closed ends its sends as it goes).
  const auto stranded = [&]() -> const std::string* {
    const std::string* at = nullptr;
    each([&](std::vector<transport::Request>& list) {
      for (auto& r : list)
        if (r.pending())
          for (const auto& link : links_)
            for (const auto& lane : link.lanes)
              if (lane.ep && lane.ep.get() == r.peer() && !link.down()) at = &link.address;
    });
    return at;
  };
  // A send still under way to a server that is up but answers nothing (stopped)
  // reads its buffers whenever that server wakes: the caller's gradient, the
  // bf16 encoding, a gathered run. The next call refilled them, and the server
  // applied one push's bytes as another's. No more calls, then, whatever
  // ended this one (interrupt() too: its caller's gradient went out of scope
  // with the exception), and the error says which memory is still read.
  const auto break_for = [&](Errc code, const Error& why, const std::string& at) {
    broken_ = Error(code, std::string(why.what()) + "; a send to server " + at +
                              " is still under way and reads this call's memory until the client is destroyed "
                              "(destroy it before freeing that memory)");
    abandon_all();
    throw *broken_;
  };
  const auto throw_if_stranded = [&](const Error& why) {
    if (const std::string* at = stranded()) break_for(why.code(), why, *at);
  };
  // interrupt(): the call ends now, not after a reconnect; a server that did
  // not come back (caught again by an outer piece of the same call): once.
  // Either way the sends under way are kept, not released with `inflight`.
  if (cause.code() == Errc::kCancelled || broken_) {
    if (!broken_) throw_if_stranded(cause);
    abandon_all();
    throw cause;
  }
  const auto by = deadline();  // one bound for all of them, not one each
  const auto bound = bound_of(by);
  std::optional<Error> cancelled;
  each([&](std::vector<transport::Request>& list) {
    for (auto& r : list) {
      if (cancelled) break;
      try {
        r.wait_until(by, bound, &interrupted_);
      } catch (const Error& e) {
        if (e.code() == Errc::kCancelled) cancelled = e;
        // Else sent to a server that closed: what it took in is the checkpoint's business now.
      }
    }
  });
  if (cancelled) {
    throw_if_stranded(*cancelled);
    abandon_all();
    throw *cancelled;
  }
  const std::string* stranded_at = stranded();
  abandon_all();  // timed out: they may still read their buffers
  bool any = false;
  if (config_.reconnect_ms != 0)
    for (auto& link : links_) {
      if (!link.down()) continue;
      reconnect(link, cause);
      any = true;
    }
  // Another server's restart too, reconnected or not, ends the calls here.
  if (stranded_at) break_for(Errc::kTimeout, cause, *stranded_at);
  if (any) return;
  // Without --reconnect a server that went stays gone: later calls went on
  // (over shared memory a put into its memory completes, and a clock needs
  // nobody below the bound), and counted pushes it never applied as sent.
  if (config_.reconnect_ms == 0)
    for (const auto& link : links_)
      if (link.down()) {
        broken_ = Error(Errc::kPeerGone, "server " + link.address +
                                             " was lost after this client connected and --reconnect is off: make a "
                                             "new client (" +
                                             std::string(cause.what()) + ")");
        break;
      }
  throw cause;
}

void ClientImpl::disconnect(ServerLink& link) {
  for (Gathered& g : gathered_)
    if (g.link == &link) {  // as flush_run() counts a run whose server restarted: one push, lost
      g.link = nullptr;
      ++stats_.pushes;
      ++stats_.pushes_lost;
    }
  // What the lanes' sends read (inbox staging and headers) and their
  // receives write (the receive region) goes once those end, not with the
  // lanes: UCX may touch it after an endpoint closed (Context::retire).
  struct Buffers {
    std::vector<std::unique_ptr<InboxWriter>> inboxes;
    std::unique_ptr<transport::Region> receive;
  };
  auto buffers = std::make_shared<Buffers>();
  // This server's own abandoned sends: another server's read its buffers, which go with its own disconnect.
  std::vector<transport::Request> reading;
  std::erase_if(abandoned_, [&](transport::Request& r) {
    const bool ours = std::any_of(link.lanes.begin(), link.lanes.end(),
                                  [&](const Lane& lane) { return lane.ep && lane.ep.get() == r.peer(); });
    if (ours) reading.push_back(std::move(r));
    return ours;
  });
  // The lanes' count of rejected messages starts again with the next connection.
  rejected_closed_ += link.rejected();
  for (auto& lane : link.lanes) {
    lane.write_back.abandon(reading);
    by_endpoint_.erase(lane.ep.get());
    buffers->inboxes.push_back(std::move(lane.inbox));
  }
  buffers->receive = std::move(link.receive);
  // Over tcp a lane's puts (its mailbox, its write-backs on the put path)
  // arrive as messages that this process writes where they say, unchecked,
  // while the server lives, whatever was closed: the receive region stays
  // mapped there as long as the context (a live server's other lanes, after one
  // dropped or a write-back failed, still sent them). Nothing reads it any
  // more: its pages go back now.
  for (auto& lane : link.lanes)
    if (lane.ep) lane.ep->close_later(buffers);
  if (buffers->receive) discard_pages(buffers->receive->data(), buffers->receive->allocated());
  link.lanes.clear();
  ++link.connection;
  link.write_back_error.clear();  // of the lanes just closed
  if (context_) context_->retire(reading, std::move(buffers));
}

void ClientImpl::give_up(ServerLink& link, const Error& why) {
  disconnect(link);
  broken_ = why;
  throw why;
}

void ClientImpl::reconnect(ServerLink& link, const Error& cause) {
  // Leaving (the destructor's last pushes) waits no longer than leaving does.
  const auto start = Clock::now(), window_end = start + std::chrono::milliseconds(config_.reconnect_ms),
             deadline = std::min(window_end, leave_by_);
  // The call ended on one server's failure; another found down with it is not that failure (its
  // line quoted the first server's error as its own).
  const std::string_view said = cause.what();
  const std::string why =
      transport::names_address(said, link.address)
          ? std::string(said)
          : "server " + link.address + " is down too (the call ended on another's failure: " + std::string(said) + ")";
  logf(LogLevel::kWarn, "rdmaps worker %u: %s; reconnecting to %s for up to %g s", options_.worker, why.c_str(),
       link.address.c_str(), std::chrono::duration<double>(deadline - start).count());
  bool refused_last = false;  // the last attempt met a server that refused it for now
  const auto not_back = [&](const std::string& last) {
    const std::string within =
        deadline < window_end ? " in the " +
                                    seconds(std::max<int64_t>(
                                        0, std::chrono::ceil<std::chrono::milliseconds>(deadline - start).count())) +
                                    " s left to leave"
                              : " within " + seconds(config_.reconnect_ms) + " s (--reconnect";
    // Back but refusing it (out of memory for it, say): not a server that never came. Peer gone all the
    // same: this client is broken for good (every later call says so), and a new one must connect.
    return Error(Errc::kPeerGone,
                 "worker " + std::to_string(options_.worker) + ": server " + link.address +
                     (refused_last ? " came back but refused it for now at every try" : " did not come back") + within +
                     (deadline < window_end ? " (" : "; ") + "last attempt: " + (last.empty() ? "none" : last) + ")");
  };
  std::string last;
  Welcome welcome;
  const transport::CancelScope cancel(&interrupted_);  // a silent server's connect ends at interrupt() too
  // Every wait of an attempt (admission, lanes, the re-pull) ends with it.
  struct AttemptBound {
    Clock::time_point& by;
    ~AttemptBound() { by = Clock::time_point::max(); }
  } const bound{attempt_by_};
  for (auto pause = std::chrono::milliseconds(50);; pause = std::min(pause * 2, std::chrono::milliseconds(1000))) {
    disconnect(link);
    welcome = Welcome{};
    // Leaving has its own end, which no attempt outlasts.
    if (Clock::now() >= leave_by_) give_up(link, not_back(last));
    try {
      // No attempt outlasts the window (a server that took the connection and
      // said nothing while it loaded its checkpoint held each one for the
      // whole timeout, and a leaving client past its 5 s).
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      // At least 2 s: admission may take a moment (a copy faulted in, an
      // earlier connection seen closed), and an attempt cut shorter failed
      // against a server that was admitting it. The same server process (a
      // dropped connection) or one that resumed admits it; one that started
      // empty refuses it (Hello::rejoin_instance).
      attempt_by_ = std::min(Clock::now() + std::min(options_.timeout, std::max(left, std::chrono::milliseconds(2000))),
                             leave_by_);
      welcome = connect_one(link.index, transport::IfRefused::kFail, attempt_by_);
      // Admitted: the server is back, and its re-pull (a whole range, large
      // over tcp) may take what is left of the window, never less than the attempt.
      attempt_by_ = std::max(attempt_by_, deadline);
      refetch(link);
      break;
    } catch (const Refusal& e) {
      if (e.accepted == kRefusedWithoutTheJob)
        give_up(link, Error(Errc::kPeerGone,
                            "server " + link.address +
                                " came back without this job's parameters (it resumed no checkpoint of it: "
                                "started without --checkpoint-dir and --resume, or found none in its directory, "
                                "as its log says); worker " +
                                std::to_string(options_.worker) + " stops rather than train from nothing"));
      if (e.for_good()) give_up(link, refused_for_good(link, e));
      last = e.what();
      refused_last = true;
    } catch (const Error& e) {
      // interrupt(): the call ends as interrupted, not as a server that did not come back.
      if (e.code() == Errc::kCancelled) {
        disconnect(link);
        throw;
      }
      // Another secret, none where one is needed, or another transport
      // version: the handshake refuses every retry alike.
      if (e.code() == Errc::kPermissionDenied || e.code() == Errc::kUnsupported)
        give_up(link, refused_for_good(link, e));
      last = e.what();
      refused_last = false;
    } catch (...) {
      disconnect(link);  // no half-made lanes (out of memory): later calls find the link down, not null endpoints
      throw;
    }
    if (Clock::now() + pause > deadline) give_up(link, not_back(last));
    // Slept in steps: interrupt() ends the call within one of them.
    for (const auto until = Clock::now() + pause; Clock::now() < until;) {
      if (interrupted_.load(std::memory_order_relaxed)) {
        // No half-made lanes left behind (an attempt that failed after some):
        // leaving posted on their null endpoints.
        disconnect(link);
        throw Error(Errc::kCancelled, "worker " + std::to_string(options_.worker) + ": reconnecting to server " +
                                          link.address + ": interrupted (the client was interrupted)");
      }
      std::this_thread::sleep_for(std::min<Clock::duration>(kInterruptCheck, until - Clock::now()));
    }
  }
  ++link.generation;
  const bool restarted = welcome.instance != link.instance;
  link.instance = welcome.instance;
  // Lost of this client's: a predecessor's that the checkpoint lacks were not.
  const uint64_t lost = link.posted > welcome.pushes_held
                            ? std::min(link.posted - welcome.pushes_held, link.posted - link.held_at_connect)
                            : 0;
  logf(LogLevel::kInfo,
       "rdmaps worker %u: reconnected to %s after %.1f s; %s holding %llu of the %llu pushes (one per shard a "
       "push() touches) this worker sent it (%llu lost)",
       options_.worker, link.address.c_str(), std::chrono::duration<double>(Clock::now() - start).count(),
       restarted ? "it resumed from a checkpoint" : "the same server process, still",
       static_cast<unsigned long long>(welcome.pushes_held), static_cast<unsigned long long>(link.posted),
       static_cast<unsigned long long>(lost));
  stats_.pushes_lost += lost;
  link.posted = welcome.pushes_held;
  // The baseline of a predecessor's pushes never rises: the same server
  // process holds this client's own too, which a later restart from an older
  // checkpoint may lack (they went uncounted as lost).
  link.held_at_connect = std::min(link.held_at_connect, welcome.pushes_held);
  ++stats_.reconnects;
  stats_.push_paths[link.index] = link.use_am ? "am" : "put";
}

void ClientImpl::refetch(ServerLink& link) {
  std::vector<transport::Request> inflight;
  std::vector<uint64_t> seqs;
  try {
    for (auto& lane : link.lanes)
      seqs.push_back(post(link, lane, MsgType::kPull, lane.first_shard, 0, 0, lane.shards, nullptr, inflight));
    complete(inflight);
  } catch (...) {
    abandon_pending(inflight);  // they read the lanes' inbox staging, retired with the lanes by disconnect()
    throw;
  }
  for (size_t l = 0; l < link.lanes.size(); ++l) {
    const Lane& lane = link.lanes[l];
    const Range whole{partition_->shard(link.index, lane.first_shard).begin,
                      partition_->shard(link.index, lane.first_shard + lane.shards - 1).end};
    // Not a copy this worker computes on (its versions are not noted): the
    // next pull fetches, under skip_pulls too (served from this one, pushes
    // named the older copy's versions, staler than the bound).
    await_pull(link, lane, seqs[l], whole, &link, false);
  }
  // The worker's copy is as old as it was; a server that resumed from a
  // checkpoint may have gone back to versions below it (the base version of
  // a push must not be ahead of its shard's).
  for (uint32_t i = 0; i < partition_->tensors().size(); ++i) {
    const Range held = overlap(partition_->tensor(i), link.range);
    for (uint64_t pos = held.begin; pos < held.end;) {
      const uint32_t k = shard_of(link, pos);
      uint64_t& version = copy_versions_[partition_->segment(i, link.index, k)];
      version = std::min(version, link.versions()[k]);
      pos = partition_->shard(link.index, k).end;
    }
  }
}

// Leaving: a Bye on every lane, then a wait until each lane acknowledged it
// (its consumed sequence reached the Bye) before the endpoints close. Closing
// first could reset a tcp connection while the lane still reads the last
// pushes, and the reset discards them (docs/protocol.md "Dead and leaving workers").
// Every wait, the closes included, ends by one deadline: a server that stopped
// answering costs it once, not once per lane and server; one that closed its
// side (whose run() returned) costs nothing (Endpoint::close_later).
ClientImpl::~ClientImpl() {
  if (!partition_) return;
  interrupted_.store(false);  // interrupt() ended the calls; the goodbye still goes
  leave_by_ = Clock::now() + std::min<std::chrono::milliseconds>(options_.timeout, kLeaveTimeout);
  // Nothing leaves a destructor: out of memory included, leaving is best effort.
  // Pushes that returned are sent before the goodbye, each run on its own: a
  // server gone kept the runs of the others after it from theirs.
  for (size_t r = 0; r < kGatherRuns; ++r) {
    try {
      flush_run(r);
    } catch (const std::exception& e) {
      logf(LogLevel::kWarn, "rdmaps: worker %u: leaving, a gathered push was not sent: %s", options_.worker, e.what());
    }
  }
  auto left = [&] { return std::chrono::duration_cast<std::chrono::milliseconds>(leave_by_ - Clock::now()); };
  struct Bye {
    ServerLink* link;
    Lane* lane;
    uint64_t seq;
  };
  std::vector<Bye> byes;
  // Unread by a live lane (stopped, or cut off), or not even sent to it: the
  // reset of closing may discard this worker's last pushes there, so say so
  // rather than return as if they were in.
  auto unacknowledged = [&](const ServerLink& link, const Lane& lane) {
    if (lane.ep->peer_closed() || lane.ep->failed()) return;  // a death already reported
    logf(LogLevel::kWarn,
         "rdmaps: worker %u: server %s lane %u did not acknowledge this worker's leave within %.1f s: its last "
         "pushes there may not be applied",
         options_.worker, link.address.c_str(), lane.index,
         std::min<std::chrono::milliseconds>(options_.timeout, kLeaveTimeout).count() / 1000.0);
  };
  for (auto& link : links_)
    for (auto& lane : link.lanes) {
      // A failed connection takes no Bye: its credit wait spent the leaving time of the others.
      if (!lane.ep || lane.ep->peer_closed() || lane.ep->failed()) continue;
      std::vector<transport::Request> inflight;
      try {
        const uint64_t seq = post(link, lane, MsgType::kBye, 0, 0, 0, 0, nullptr, inflight);
        for (auto& r : inflight) r.wait_for(std::max(left(), 1ms));
        byes.push_back({&link, &lane, seq});
      } catch (const std::exception&) {
        unacknowledged(link, lane);  // gone (said before), or stopped: leaving is best effort
      }
      try {
        for (auto& r : inflight)
          if (r.pending()) abandoned_.push_back(std::move(r));  // it still reads the inbox staging
      } catch (const std::exception&) {
        // Out of memory: released instead, as before retire() existed.
      }
    }
  transport::IdleBackoff idle;
  const auto links_down = [&] {
    return std::count_if(links_.begin(), links_.end(), [](const ServerLink& l) { return l.write_back_failed(); });
  };
  for (bool waiting = !byes.empty(); waiting && Clock::now() < leave_by_;) {
    const auto down = links_down();
    try {
      idle.pause(progress());
    } catch (const std::exception& e) {
      // A write-back of one server failed to land: that link is down (it
      // publishes no mailbox any more), the other servers are still waited
      // for. Anything else ends the wait: nothing more can be learned.
      logf(LogLevel::kWarn, "rdmaps: worker %u: leaving: %s", options_.worker, e.what());
      if (links_down() == down) break;
    }
    waiting = false;
    for (const Bye& b : byes)
      if (b.link->load(b.link->mailbox(*b.lane).consumed_seq) < b.seq && !b.lane->ep->peer_closed() &&
          !b.lane->ep->failed() && !b.link->write_back_failed())
        waiting = true;
  }
  for (const Bye& b : byes)
    if (b.link->load(b.link->mailbox(*b.lane).consumed_seq) < b.seq && !b.link->write_back_failed())
      unacknowledged(*b.link, *b.lane);
  std::vector<transport::Request> reading;
  try {
    reading = std::move(abandoned_);
    for (auto* calls : {&inflight_, &gather_inflight_})
      for (auto& r : *calls) reading.push_back(std::move(r));
    for (auto& link : links_)
      for (auto& lane : link.lanes) lane.write_back.abandon(reading);
  } catch (const std::exception&) {
    // Out of memory: released instead, as before retire() existed.
  }
  // What is still in flight reads (or writes) the links' buffers, the
  // gathered pushes' and the encoded ones': they go when it ends, and not
  // before the context's last progress (see disconnect()). Filled once the
  // closes had their time.
  struct Left {
    std::vector<ServerLink> links;
    std::array<Gathered, kGatherRuns> gathered;
    std::vector<uint16_t> wire;
    std::unique_ptr<GpuTransfer> gpu;
    std::vector<Registered> registered;  // where write-backs land in place
    std::vector<std::vector<uint8_t>> payloads;
  };
  std::shared_ptr<Left> kept;
  try {
    kept = std::make_shared<Left>();
  } catch (const std::exception&) {
    // Out of memory: the buffers go with the members, as before retire() existed.
  }
  if (!context_) return;
  // From here a write-back is dropped: one taken in now would write (a
  // rendezvous, later) into memory that `reading` does not hold.
  context_->set_am_handler(kAmWriteBack, [](transport::AmMessage&) {});
  for (auto& link : links_)
    for (auto& lane : link.lanes)
      if (lane.ep) lane.ep->close_later(kept);
  // A server that acknowledged its Byes also acknowledges the close at once.
  context_->finish_closes(std::max(leave_by_, Clock::now() + 100ms));
  // Sends still in flight to a silent server had a second more as the context
  // went (a 5 s leave took 6.1 s): the leave's bound is the whole destroy's.
  context_->end_by(std::max(leave_by_, Clock::now()));
  if (!kept) return;
  *kept = Left{std::move(links_), std::move(gathered_),   std::move(wire_),
               std::move(gpu_),   std::move(registered_), std::move(abandoned_payloads_)};
  context_->retire(reading, std::move(kept));
}

}  // namespace rdmaps::ps
