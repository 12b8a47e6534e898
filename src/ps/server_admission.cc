// Admission on the server's control thread (server_impl.h): a Hello is
// admitted (the worker's ticket, copies and Welcome), held while its id's
// earlier connection may still be closing, or refused with its reason.
#include <algorithm>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "src/api/config_text.h"
#include "src/ps/memory_plan.h"
#include "src/ps/server_impl.h"
#include "transport/auth.h"

namespace rdmaps::ps {

using namespace std::chrono_literals;

namespace {
// The worker id is connected on some lane: refused only once kPredecessorWait passed.
struct StillConnected : Error {
  using Error::Error;
};
// A reconnecting worker whose server process went, and this one did not resume its job.
struct WithoutTheJob : Error {
  using Error::Error;
};

// What the start-up line left to the first worker (describe_server), said once it is known.
void say_what_the_first_worker_set(const std::string& tag, uint32_t worker, const Config& job, uint64_t staleness,
                                   bool rule_from_workers) {
  std::string set;
  if (!job.staleness_stated) set = "the staleness bound " + bound_text(staleness);
  if (rule_from_workers) set += (set.empty() ? "" : " and ") + std::string("the update rule: ") + describe_rule(job);
  if (!set.empty()) logf(LogLevel::kInfo, "%s: worker %u set %s", tag.c_str(), worker, set.c_str());
}
}  // namespace

void ServerImpl::admit(std::unique_ptr<transport::Endpoint> ep, std::vector<uint8_t> message, Clock::time_point since,
                       bool retried) {
  const std::string peer = ep->peer_name();
  Welcome welcome;
  auto close_later = [&] { closing_.add(std::move(ep)); };
  // Nothing a refused Hello said survives it: the table and rule are fixed
  // only by admission_.admit() below, after every check passed.
  uint32_t worker = 0;
  bool named = false;  // the Hello was read: `worker` is its id
  auto refuse = [&](const std::string& why, uint32_t code = kRefused) {
    // Kept for the "waiting for workers" line: a worker refused at once and then waited for said nothing of it.
    if (named && worker < last_refusal_.size()) last_refusal_[worker] = why;
    refuse_peer(std::move(ep), why, code);
  };
  try {
    const Hello hello = decode_hello(message, peer);
    worker = hello.worker;
    named = true;
    if (hello.probe) {  // would it be admitted? Nothing is fixed, nothing held for it
      if (hello.probe == kProbeJoining)
        return refuse("a notice that the worker joins, not on the connection of its probe");
      if (std::string why = admission_.check(hello); !why.empty()) return refuse(why);
      // Memory too: a worker refused for it by the last of its servers was
      // counted lost by those that admitted it, and its first server's table
      // was fixed by it.
      std::vector<bool> needs_copy;
      uint64_t bytes = 0;
      if (std::string why =
              admission_.has_table() ? no_memory_for(*ep, hello, &bytes, &needs_copy) : no_memory_for_first(*ep, hello);
          !why.empty())
        return refuse(why, kRefusedForNow);
      welcome.accepted = kWouldAdmit;
      welcome.instance = instance_;  // a worker given one server twice (two spellings) sees it
      // ... and servers that are not one job's: the worker compares them.
      welcome.job = admission_.probe_job();
      welcome.workers = options_.workers;
      welcome.rule = RuleParams::from(admission_.config_for(hello));
      // ... and a job where some servers hold parameters and others none.
      welcome.resumed = resumed_ || applied_any() ? kProbeHolding
                        : admission_.has_table()  ? kProbeStarted
                                                  : kProbeFresh;
      ep->send_control(encode(welcome), kAnswerTimeout);
      // Kept until it joins here: a worker that dies after joining the servers before this one is counted lost.
      return joining_.hold(std::move(ep), hello.worker, hello.reconnect_ms, closing_);
    }
    admit_checked(*ep, hello, welcome);
    // Admitted, a newer Hello of a held id replaces the held one, as hold()
    // does: the held one, retried after it in the same turn, was admitted
    // over it and revoked its token (every lane then refused the newest
    // process). One refused leaves the held one be.
    refuse_held(worker, peer);
  } catch (const StillConnected& e) {
    if (Clock::now() - since < kPredecessorWait && !ep->peer_closed()) {
      // Said once: an operator sees why a restarted worker waits, and whether it then trained.
      if (!retried)
        logf(LogLevel::kInfo, "%s: %s (worker %u) is held: its id's earlier connection still looks live", tag_.c_str(),
             peer.c_str(), worker);
      return hold(std::move(ep), std::move(message), since, worker);
    }
    return refuse(std::string(e.what()) + " (waited " + std::to_string(kPredecessorWait.count()) +
                      " s for its earlier connection to close)",
                  kRefusedForNow);
  } catch (const WithoutTheJob& e) {
    return refuse(e.what(), kRefusedWithoutTheJob);
  } catch (const std::bad_alloc&) {
    return refuse("out of memory while admitting it", kRefusedForNow);
  } catch (const Error& e) {
    return refuse(e.what(), refusal_code(e));
  } catch (const std::exception& e) {
    return refuse(e.what(), kRefusedForNow);
  }
  close_later();  // the worker goes on with the lanes
}

bool ServerImpl::uses_am(const transport::Endpoint& ep, const Hello& hello) {
  const PushPath wanted = static_cast<PushPath>(hello.push_path);
  return wanted == PushPath::kAm || (wanted == PushPath::kAuto && !ep.rma_native());
}

// Puts to a worker's copy wait for its own progress (tcp; pulls put into its
// own memory over shared memory, which --put-landing on asks for): a copy to
// put from, where the lane would otherwise put from the parameters.
bool ServerImpl::puts_emulated(const transport::Endpoint& ep, const Config& job) {
  return !ep.rma_native() || (job.put_landing == PutLanding::kOn && !ep.rma_to_registered());
}

std::string ServerImpl::no_memory_for(const transport::Endpoint& ep, const Hello& hello, uint64_t* bytes,
                                      std::vector<bool>* needs_copy) {
  const bool emulated = puts_emulated(ep, admission_.config());
  const bool use_am = uses_am(ep, hello);
  needs_copy->assign(lanes_.size(), false);
  *bytes = lanes_.size() * inbox_bytes(admission_.config());
  for (size_t l = 0; l < lanes_.size(); ++l)
    if (((*needs_copy)[l] = lanes_[l]->needs_copy(use_am, emulated))) *bytes += lanes_[l]->copy_bytes();
  release_departed_budgets();
  return memory_budget_.refusal(hello.worker, *bytes, transport::available_memory());
}

// A worker that left, was lost, or never reached a lane holds none of this
// server's memory any more (its lanes let it go): its part of the budget
// refused workers while the memory was free.
void ServerImpl::release_departed_budgets() {
  const auto now = Clock::now();
  for (uint32_t w = 0; w < options_.workers; ++w) {
    if (memory_budget_.untouched(w) && pushes_taken(w) > taken_at_admission_[w]) memory_budget_.touched(w);
    if (!memory_budget_.holds(w) || (admitted_at_[w] && now - *admitted_at_[w] < kReachWindow)) continue;
    if (std::none_of(lanes_.begin(), lanes_.end(), [&](const auto& lane) { return lane->live_or_admitting(w); })) {
      // What the lanes it never reached did not take (it died connecting; one still on its way after
      // kReachWindow, slow, finds none and its lanes make their own, unplanned).
      tickets_[w].copies.drop();
      memory_budget_.promise(w, 0);
    }
  }
}

void ServerImpl::forsake(uint32_t worker, uint64_t reconnect_ms) {
  forsaken_[worker] = reconnect_ms;
  for (const auto& lane : lanes_) lane->forsake(worker, reconnect_ms);
}

uint64_t ServerImpl::pushes_taken(uint32_t worker) const {
  uint64_t taken = 0;
  for (const auto& lane : lanes_) taken += lane->counters().taken[worker].load(std::memory_order_relaxed);
  return taken;
}

void ServerImpl::refuse_peer(std::unique_ptr<transport::Endpoint> ep, const std::string& why, uint32_t code) {
  refusals_.warn("refused " + ep->peer_name() + ": " + why);
  Welcome welcome;
  welcome.accepted = code;
  welcome.reason = why;
  welcome.instance = instance_;  // one server listed twice is refused at its other index: the worker names both
  try {
    ep->send_control(encode(welcome), kAnswerTimeout);
  } catch (const Error&) {
  }
  closing_.add(std::move(ep));
}

void ServerImpl::hold(std::unique_ptr<transport::Endpoint> ep, std::vector<uint8_t> message, Clock::time_point since,
                      uint32_t worker) {
  refuse_held(worker, ep->peer_name());
  held_.push_back({std::move(ep), std::move(message), since, worker});
}

void ServerImpl::refuse_held(uint32_t worker, const std::string& newer) {
  for (auto it = held_.begin(); it != held_.end(); ++it) {
    if (it->worker != worker) continue;
    refuse_peer(std::move(it->ep),
                "worker id " + std::to_string(worker) + " connected again from " + newer +
                    " while this connection waited for an earlier one to close",
                kRefusedForNow);
    held_.erase(it);
    return;
  }
}

void ServerImpl::admit_checked(transport::Endpoint& ep, const Hello& hello, Welcome& welcome) {
  const std::string peer = ep.peer_name();
  if (std::string why = admission_.check(hello); !why.empty()) throw Error(Errc::kPermissionDenied, why);
  // Before anything is fixed (and after a configuration that differs, which says more): admitted, it gave this empty
  // process the job's table, later probes found "a job starting", and the next new worker joined a model part trained,
  // part zeros.
  if (hello.rejoin_instance != 0 && hello.rejoin_instance != instance_ && !resumed_)
    throw WithoutTheJob(Errc::kPeerGone, "worker " + std::to_string(hello.worker) +
                                             " rejoins a job this server process does not hold: it resumed no "
                                             "checkpoint of it (started without --checkpoint-dir and --resume, or "
                                             "found none there: its log says which)");
  const auto still_connected = [&] {
    bool connected = false;
    for (const auto& lane : lanes_)
      if (lane->live_or_admitting(hello.worker)) {
        lane->check_soon(hello.worker);  // each lane that holds it, at once rather than in its turn
        connected = true;
      }
    if (connected)
      throw StillConnected(Errc::kPermissionDenied,
                           "worker id " + std::to_string(hello.worker) + " is already connected");
  };
  still_connected();
  // The earlier ticket goes before the lanes are looked at again: a lane
  // that read it before is seen admitting or live, one after reads it gone
  // (AdmissionTicket::read). Taken only once the copies below were made, it
  // let a lane admit the earlier connection meanwhile (0.4 s for 128 MB)
  // and refuse the newer one as already connected: neither trained.
  AdmissionTicket& ticket = tickets_[hello.worker];
  const uint64_t earlier = ticket.token.exchange(0, std::memory_order_seq_cst);
  bool use_am = false;
  std::vector<HostPages> copies;
  try {
    still_connected();
    forsaken_[hello.worker].reset();  // back: the lanes it starts do not take it for given up
    const bool first = !admission_.has_table();
    if (first) start_lanes(admission_.config_for(hello), hello.tensors, hello.staleness);
    // At once: the lanes started fix the table (a throw before it, out of
    // memory, left the next Hello to start a second set of lanes, freeing the
    // partition the first set read).
    admission_.admit(hello);
    checkpointer_.set_job(admission_.job());
    if (first)
      say_what_the_first_worker_set(tag_, hello.worker, admission_.config(), hello.staleness,
                                    options_.rule_from_workers);
    copies.resize(lanes_.size());
    use_am = uses_am(ep, hello);
    // The worker's copy of each lane's range, where the lane keeps one, made
    // and faulted in here, so that the lane only registers it: a lane faulting
    // it in held every other worker on it (0.43 s for a 128 MB range). This
    // thread serves no push; the worker waits for it as it waited for the
    // lanes, and on as many cores as they had.
    std::vector<bool> needs_copy;
    uint64_t bytes = 0;
    if (std::string why = no_memory_for(ep, hello, &bytes, &needs_copy); !why.empty())
      throw Error(Errc::kNoMemory, why);
    try {
      for (size_t l = 0; l < lanes_.size(); ++l)
        if (needs_copy[l]) copies[l] = HostPages(lanes_[l]->copy_bytes());
      if (!planned_copies_ && !copies.empty() && copies.front() && !said_unplanned_copy_.exchange(true)) {
        logf(LogLevel::kWarn,
             "rdmaps-server: warning: worker %u takes a copy of this server's range (%s) that the memory plan did "
             "not count (%s)",
             hello.worker,
             transport::size_text(partition_->server_range(options_.index).size() * sizeof(float)).c_str(),
             use_am ? "it asked for the active-message push path: give the server --push-path am to plan for it"
                    : "its pulls are put by emulated puts: give the server the workers' --put-landing to plan for it");
      }
      fault_in(copies, std::min<uint32_t>(usable_cores(), static_cast<uint32_t>(lanes_.size())));
    } catch (const Error& e) {
      throw Error(e.code(), std::string("server has no memory for this worker's copy of its range: ") + e.what());
    }
    memory_budget_.promise(hello.worker, bytes, lanes_.size() * inbox_bytes(admission_.config()));
    taken_at_admission_[hello.worker] = pushes_taken(hello.worker);
  } catch (...) {
    ticket.token.store(earlier,
                       std::memory_order_seq_cst);  // refused: the earlier ticket stands (a reconnecting worker's)
    throw;
  }
  uint64_t token = 0;
  while (token == 0) transport::random_bytes(&token, sizeof(token));
  // No token while the fields change (cleared above): a lane reading them
  // for the ticket before sees it go and refuses (AdmissionTicket::read).
  std::atomic_thread_fence(std::memory_order_release);
  ticket.use_am.store(use_am ? 1 : 0, std::memory_order_relaxed);
  // Before the token: no lane hello can carry it before the Welcome anyway.
  // An earlier ticket's untaken copies are freed (at most one per lane waits).
  ticket.copies.offer(token, std::move(copies));
  // One start clock for every lane (a lane choosing its own disagreed with
  // the others where the worker had reached some of them before): the
  // furthest any lane's slowest live worker got, so that a rejoining worker
  // holds nobody back, and no earlier than the resumed checkpoint expects it.
  uint64_t start_clock = resumed_clocks_[hello.worker];
  for (const auto& lane : lanes_)
    start_clock = std::max(start_clock, lane->counters().min_clock.load(std::memory_order_relaxed));
  ticket.start_clock.store(start_clock, std::memory_order_relaxed);
  ticket.reconnect_ms.store(hello.reconnect_ms, std::memory_order_relaxed);
  for (const auto& lane : lanes_) lane->expect(hello.worker);
  ticket.token.store(token, std::memory_order_release);
  const Range range = partition_->server_range(options_.index);
  welcome.accepted = kAdmitted;
  welcome.range_begin = range.begin;
  welcome.range_end = range.end;
  welcome.shard_floats = admission_.config().shard_floats;
  welcome.inbox_slots = admission_.config().inbox_slots;
  welcome.push_path = static_cast<uint32_t>(use_am ? PushPath::kAm : PushPath::kPut);
  welcome.token = token;
  for (const auto& lane : lanes_) welcome.lanes.push_back({lane->port(), lane->first_shard(), lane->shards()});
  welcome.resumed = resumed_ ? 1 : 0;
  welcome.holding = resumed_ || applied_any() ? 1 : 0;
  welcome.instance = instance_;
  welcome.job = admission_.job();
  welcome.pushes_held = restored_pushes_[hello.worker];
  for (const auto& lane : lanes_)
    welcome.pushes_held += lane->counters().taken[hello.worker].load(std::memory_order_relaxed);
  try {
    ep.send_control(encode(welcome), kAnswerTimeout);
  } catch (const Error& e) {
    logf(LogLevel::kWarn, "%s: worker %u (%s) left during the handshake: %s", tag_.c_str(), hello.worker, peer.c_str(),
         e.what());
  }
  admitted_at_[hello.worker] = Clock::now();
  last_refusal_[hello.worker].clear();
}

}  // namespace rdmaps::ps
