// A lane's fault handling: malformed messages, workers that leave, die or
// stall, and the take-in of a closed worker's last messages.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "rdmaps/log.h"
#include "src/ps/server_lane.h"
#include "transport/memory_limit.h"

namespace rdmaps::ps {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
constexpr auto kLeaveAckTimeout = 1s;  // how long a lane waits to send a Bye's acknowledgment
constexpr auto kDiscardAfter = 5s;     // a departed worker's memory still held this long loses its pages

struct ServerLane::Departed {
  std::unique_ptr<WriteBackSender> writer;
  std::unique_ptr<WorkerCopy> copy;
  std::shared_ptr<InboxReader> inbox;
  std::string name;  // the worker's, for the log
  void discard(uint32_t lane) noexcept {
    size_t bytes = 0;
    for (const transport::Region* r : {copy ? &copy->region() : nullptr, inbox ? &inbox->region() : nullptr}) {
      if (!r) continue;
      // To the end of its allocation: the rest of a huge page stayed resident (1 MiB of every 1 MiB inbox).
      discard_pages(r->data(), r->allocated());
      bytes += r->allocated();
    }
    logf(LogLevel::kInfo, "rdmaps-server: lane %u gave back the %s of memory %s held, its sends never ending", lane,
         transport::size_text(bytes).c_str(), name.c_str());
  }
};

const char* reject_reason_name(RejectReason reason) {
  switch (reason) {
    case RejectReason::kSequence:
      return "sequence";
    case RejectReason::kHeader:
      return "header";
    case RejectReason::kNonFinite:
      return "non-finite";
    case RejectReason::kLanding:
      return "landing";
  }
  return "unknown";
}

void ServerLane::reject(Worker& w, RejectReason reason, const std::string& why) {
  rejections_.warn("rejected a message from " + w.name + ": " + why);  // counted exactly below
  LaneCounters::add(counters_.rejected);
  LaneCounters::add(counters_.rejected_for[static_cast<size_t>(reason)]);
  LaneCounters::add(counters_.rejected_by[w.id]);
  ++w.mailbox.rejected;
}

// Every lane sees each leave and each death; lane 0 speaks and counts for the server.
void ServerLane::report_end(const Worker& w, const char* why) {
  LaneCounters::add(counters_.worker_events);
  if (setup_.index != 0) return;
  const bool left = std::strcmp(why, "left") == 0;
  if (setup_.server->log_connections || !left)
    logf(LogLevel::kInfo, "%s: %s %s", server_tag_.c_str(), w.name.c_str(), why);
  LaneCounters::add(left ? counters_.workers_left : counters_.workers_lost);
}

void ServerLane::drop(Worker& w, const char* why) {
  if (!w.live && !w.ep) return;
  if (why) report_end(w, why);
  release(w);
  if (!why) return;  // the server stops
  update_min_clock();
  // Not a leave: the worker may be reconnecting (--reconnect, in its Hello).
  w.back_by = std::chrono::steady_clock::now() + std::chrono::milliseconds(w.reconnect_ms);
}

void ServerLane::disconnect_all() {
  for (auto& w : workers_) release(w);
  // The server stops: no lane is left to wait for the workers' side of the close.
  closing_.close_all(*context_);
}

void ServerLane::release(Worker& w) {
  w.live = false;
  live_[w.id].store(false, std::memory_order_release);
  // Sends to a worker that left or stalled read the writer's staging and
  // headers and the worker's copy (their source), and its pushes still
  // landing write its inbox, until they end, long after its endpoint closed:
  // all of it is read until then, not now nor at its rejoin (Context::retire).
  std::vector<transport::Request> in_flight;
  if (w.writer) in_flight = w.writer->abandon();
  if (w.inbox) w.inbox->abandon_landings(in_flight);
  auto departed =
      std::make_shared<Departed>(Departed{std::move(w.writer), std::move(w.copy), std::move(w.inbox), w.name});
  if (departed->copy || departed->inbox) departed_.push_back({departed, departed->inbox, Clock::now()});
  // A live worker's puts may still land in its inbox after the close: the
  // close keeps it as long as they can (Endpoint::close_later).
  std::shared_ptr<void> inbox = departed->inbox;
  context_->retire(in_flight, std::move(departed));
  if (w.ep) {
    by_endpoint_.erase(w.ep.get());
    closing_.add(std::move(w.ep), std::move(inbox));
  }
}

// A clean leave: the worker waits for this lane to acknowledge its Bye before
// it closes, so the lane has read everything it sent (a tcp socket closed with
// unread data resets the connection, and the reset discards what the lane had
// not read yet: its last pushes). Counted before the acknowledgment, so a
// worker that returned from leaving finds its leave in the server's stats.
void ServerLane::leave(Worker& w) {
  w.mailbox.consumed_seq = w.inbox->consume();
  report_end(w, "left");
  w.back_by = {};  // left: not expected back (an earlier death's window kept the job going, and was saved)
  // Briefly, one deadline for all of it (three waits of 1 s each held the
  // lane 3 s): a worker that stops progressing must not hold this lane for
  // kIoTimeout (its other workers wait meanwhile). Not at all where its
  // connection closed (the Bye was among its last messages): nobody reads it.
  if (!w.departed) {
    try {
      const auto deadline = Clock::now() + kLeaveAckTimeout;
      w.writer->send_mailbox(w.mailbox, deadline, kLeaveAckTimeout);
      w.writer->wait_mailbox_sent(deadline, kLeaveAckTimeout);
    } catch (const Error&) {
      // It closed, or stalled, without waiting for the acknowledgment: it left all the same.
    }
  }
  release(w);
  update_min_clock();
}

// A poll() per worker checked: a few per call, in turn, so that a lane of
// hundreds of workers does not spend its idle rounds in system calls; each is
// still checked every few milliseconds.
void ServerLane::check_liveness() {
  const size_t n = std::min(workers_.size(), kLivenessChecksPerCall);
  for (size_t i = 0; i < n; ++i) check_one(workers_[liveness_next_++ % workers_.size()]);
  closing_.sweep();
  discard_departed();
  warn_stalled();
  publish_holding();
  rejections_.flush();
  refusals_.flush();
}

void ServerLane::discard_departed() {
  if (departed_.empty()) return;
  const auto now = Clock::now();
  std::erase_if(departed_, [&](const Held& h) {
    if (now - h.since < kDiscardAfter) return false;
    if (auto held = h.what.lock()) {
      held->discard(setup_.index);
      return true;
    }
    // Its sends ended, and what they read went with them; the inbox stays
    // mapped, read by nobody. Not at once: pages that the worker's last
    // pushes wrote after a discard stayed resident for good (1.5 MiB a kill).
    if (h.inbox) discard_pages(h.inbox->region().data(), h.inbox->region().allocated());
    return true;
  });
}

void ServerLane::check_suspects() {
  for (size_t i = 0; i < workers_.size(); ++i)
    if (suspects_[i].load(std::memory_order_relaxed) && suspects_[i].exchange(false, std::memory_order_relaxed))
      check_one(workers_[i]);
}

void ServerLane::check_one(Worker& w) {
  if (!w.live || !(w.ep->peer_closed() || w.ep->failed())) return;
  take_in_last_messages(w);  // a clean leave ends with a Bye there
  if (w.live) drop(w, "died (connection closed); dropped from the clock");
}

// A worker at the slowest clock that does not advance it holds every other
// worker back under SSP: say so once per stall (lane 0 speaks for the server).
// While some worker has yet to connect, that one holds the clock (the server
// names it every 10 s): the connected ones at clock 0 are not stalled, and
// their time is counted from when the last one came (1024 virtual workers
// drew 206 false warnings while the rest connected). Nor is one that waited
// at a clock ahead until the slowest came up to it: it holds the job from
// then (it was logged at once, blamed for the stall it had waited out).
void ServerLane::warn_stalled() {
  const auto limit = setup_.server->stall_warning;
  if (limit.count() == 0 || setup_.index != 0) return;
  const auto now = Clock::now();
  if (std::any_of(workers_.begin(), workers_.end(), [](const Worker& w) { return !w.connected_once; })) {
    all_joined_at_ = {};
    return;
  }
  if (all_joined_at_ == Clock::time_point{}) all_joined_at_ = now;
  for (auto& w : workers_) {
    const auto holding_since = std::max({w.clock_since, all_joined_at_, min_clock_since_});
    if (!w.live || w.stall_logged || w.clock != min_clock_ || now - holding_since < limit) continue;
    w.stall_logged = true;
    LaneCounters::add(counters_.stall_warnings);
    // Who waits for it, as it is: under --async, or alone, nobody did, and the line said they did.
    const uint64_t bound = setup_.staleness;
    size_t waiting = 0;
    for (const auto& other : workers_)
      if (other.live && bound != kInfiniteStaleness && other.clock - w.clock > bound) ++waiting;
    const std::string who =
        bound == kInfiniteStaleness ? "no worker waits for it: the staleness bound is inf; is it hung?"
        : waiting ? std::to_string(waiting) + " worker(s) ahead of it by the staleness bound wait for it"
                  : "none waits for it yet: the others are within the staleness bound of it";
    logf(LogLevel::kWarn, "%s: %s has held the slowest clock (%llu) for %.1f s without advancing it (%s)",
         server_tag_.c_str(), w.name.c_str(), static_cast<unsigned long long>(w.clock),
         std::chrono::duration<double>(now - holding_since).count(), who.c_str());
  }
}

// A worker's socket can close while its last messages (pushes, its clock, a
// Bye) wait in its inbox or in UCX: the lane may have polled that inbox just
// before they landed. Take them in before judging the worker dead, so nothing
// it completed is lost and a clean leave is not reported as a death.
// Quiet means 5 ms without anything from it, not a number of polls: over tcp
// the bytes of its last active messages can still be on their way through
// UCX's socket when the bootstrap socket's close is seen (seen once in 120
// leaves with two lanes, polling 16 times).
void ServerLane::take_in_last_messages(Worker& w) {
  w.departed = true;
  const auto start = Clock::now(), deadline = start + 100ms;
  for (auto last = start; w.live;) {
    const auto now = Clock::now();
    if (now > deadline || now - last > 5ms) break;
    context_->progress();
    complete_landings();
    if (poll_inbox(w) || w.inbox->landing()) last = now;
  }
}

void ServerLane::take_forsaken() {
  const auto now = Clock::now();
  for (auto& w : workers_) {
    const uint64_t window = forsaken_[w.id].exchange(0, std::memory_order_acquire);
    // One that reached this lane is live here, or was counted when it went: this lane knows of it.
    if (window == 0 || w.live || w.connected_once) continue;
    w.connected_once = true;
    if (w.name.empty()) w.name = "worker " + std::to_string(w.id);
    report_end(w, "died while it joined the job's servers, before it reached this one; dropped from the clock");
    update_min_clock();
    w.back_by = now + std::chrono::milliseconds(window - 1);
  }
}

bool ServerLane::all_done() const {
  const auto now = std::chrono::steady_clock::now();
  for (const auto& w : workers_)
    if (w.live || !w.connected_once || now < w.back_by) return false;
  return closing_.empty();
}

}  // namespace rdmaps::ps
