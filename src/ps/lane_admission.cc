// A lane's admission of a worker the control thread admitted: its lane
// Hello checked against the ticket, its inbox, copy and write-back sender
// made once (never per push), its Welcome; or a refusal with the reason.
#include <algorithm>
#include <atomic>
#include <span>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "src/ps/server_lane.h"
#include "transport/file_limit.h"

namespace rdmaps::ps {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using transport::Access;

namespace {
constexpr auto kAnswerTimeout = 100ms;  // a LaneWelcome: small, into an empty socket buffer
}  // namespace

// The worker was admitted by the control thread, which gave it a token; the
// lane registers this worker's inbox and copy once, never per push.
void ServerLane::admit(std::unique_ptr<transport::Endpoint> ep, const std::vector<uint8_t>& message) {
  const std::string peer = ep->peer_name();
  try {
    admit_checked(ep, decode_lane_hello(message, peer));
  } catch (const std::bad_alloc&) {
    if (ep) refuse(*ep, "out of memory while registering its memory", kRefusedForNow);
  } catch (const Error& e) {
    if (ep) refuse(*ep, e.what(), refusal_code(e));
  } catch (const std::exception& e) {
    if (ep) refuse(*ep, e.what(), kRefusedForNow);
  }
}

void ServerLane::refuse(transport::Endpoint& ep, const std::string& why, uint32_t code) {
  LaneWelcome welcome;
  welcome.accepted = code;
  welcome.reason = why;
  refusals_.warn("refused " + ep.peer_name() + ": " + why);
  try {
    ep.send_control(encode(welcome), kAnswerTimeout);
  } catch (const Error&) {
  }
}

void ServerLane::admit_checked(std::unique_ptr<transport::Endpoint>& ep, const LaneHello& hello) {
  const std::string peer = ep->peer_name();
  LaneWelcome welcome;
  if (hello.worker >= workers_.size())
    throw Error(Errc::kPermissionDenied, "worker id " + std::to_string(hello.worker) + " is not below the " +
                                             std::to_string(workers_.size()) +
                                             " workers this server expects (--workers)");
  AdmissionTicket& ticket = setup_.tickets[hello.worker];
  // Flagged before the ticket is read, cleared after live is set: a control
  // thread replacing the ticket meanwhile sees one or the other, or this
  // lane reads the ticket gone (a lane admitted the older connection while
  // the newer one's copies were made, and refused the newer: neither trained).
  struct Admitting {
    std::atomic<bool>& flag;
    explicit Admitting(std::atomic<bool>& f) : flag(f) { flag.store(true, std::memory_order_seq_cst); }
    ~Admitting() { flag.store(false, std::memory_order_seq_cst); }
  } admitting(admitting_[hello.worker]);
  const std::optional<AdmissionTicket::Fields> admitted = ticket.read(hello.token);
  if (!admitted)
    throw Error(Errc::kPermissionDenied, "worker " + std::to_string(hello.worker) +
                                             " was not admitted by this server (connect to its listen address first; "
                                             "or a newer Hello of this id was admitted since)");
  Worker& w = workers_[hello.worker];
  if (w.live)
    throw Error(Errc::kPermissionDenied, "worker id " + std::to_string(hello.worker) + " is already connected");
  const bool use_am = admitted->use_am;
  // UCX 1.13 crashes when unpacking a shared-memory key meets the open-files
  // limit (it releases a half-made key): refuse the worker while there is
  // room to say so, and keep serving the others.
  if (const std::string hint = transport::open_files_hint(); !hint.empty())
    throw Error(Errc::kNoMemory,
                "worker " + std::to_string(hello.worker) + " refused: no open files left for it" + hint);
  auto receive = ep->import(transport::RegionDescriptor::parse(hello.receive_region, peer));
  if (receive->size() < receive_layout_.bytes())
    throw Error(Errc::kPermissionDenied, "receive region of " + std::to_string(receive->size()) + " bytes, needs " +
                                             std::to_string(receive_layout_.bytes()));
  // Only puts land where the worker says; on the active-message path the worker chooses itself.
  std::vector<std::unique_ptr<transport::RemoteRegion>> landings;
  for (size_t i = 0; !use_am && i < hello.landing_regions.size(); ++i)
    landings.push_back(import_landing(*ep, hello.landing_regions[i], peer, "landing region " + std::to_string(i)));
  try {
    // Built aside and kept only once all of it worked: a refusal leaves the worker's slot as it was.
    auto inbox = std::make_unique<InboxReader>(
        context_->allocate(slot_layout_.slot_bytes() * setup_.config.inbox_slots, Access::kRemoteWrite), slot_layout_,
        setup_.config.inbox_slots);
    // The worker's copy: its write-back source and DC backup, for the rules
    // and paths that need one. The control thread made its memory and faulted
    // it in when it admitted the worker: doing that here held every other
    // worker of this lane (0.43 s for a 128 MB range). The lane only registers it.
    std::unique_ptr<WorkerCopy> copy;
    if (needs_copy(use_am, !ep->rma_native() || (!landings.empty() && !ep->rma_to_registered()))) {
      HostPages memory = ticket.copies.take(hello.token, setup_.index);
      // None waiting for this ticket (its lane hello came twice, the ticket
      // was reissued meanwhile, or the control thread judged by the server's
      // --put-landing where the worker's asked for landings): mapped here
      // rather than refused; its pages fault in as the worker's first
      // write-backs touch them.
      if (!memory) {
        memory = HostPages(copy_bytes_);
        say_unplanned_copy(w);
      }
      copy = std::make_unique<WorkerCopy>(*context_, std::move(memory), copy_bytes_, *setup_.free_later);
    } else if (HostPages unused = ticket.copies.take(hello.token, setup_.index)) {
      // Made for the server's --put-landing on, and this worker offered no
      // landing: resident, unused, until its id was admitted again.
      setup_.free_later->add(std::move(unused));
    }
    auto writer = std::make_unique<WriteBackSender>(*context_, *ep, std::move(receive),
                                                    receive_layout_.mailbox_offset(setup_.index), setup_.shards, use_am,
                                                    std::move(landings));
    store_->attach(w.id, copy ? copy->floats() : nullptr);  // may fail (a GPU shard's memory)
    w.inbox = std::move(inbox);
    w.copy = std::move(copy);
    w.writer = std::move(writer);
  } catch (const Error& e) {
    throw Error(e.code(), std::string("server could not register memory: ") + e.what());
  }
  w.departed = false;
  // The worker starts at the clock the control thread chose for its ticket,
  // at its own where that is further (it reconnects after this server
  // restarted), and never below this lane's slowest live worker, who may
  // have clocked on since the ticket: the minimum went back, and workers
  // already s clocks ahead of the rejoiner stayed ahead. Lanes may so differ
  // by a few clocks: the worker goes on from the furthest and sends each
  // lane the clocks in between (ClientImpl::clock), one by one as the lane
  // checks them (a lane the worker had never reached, started at 0, refused
  // its every clock when it was sent only the furthest).
  const uint64_t start_clock = std::max({admitted->start_clock, hello.clock, min_clock_});
  w.mailbox = Mailbox{};
  w.mailbox.min_clock = min_clock_;
  w.mailbox.holding = holding_;
  w.mailbox.landings = w.writer->landing_bytes().size();
  w.name = "worker " + std::to_string(w.id) + " (" + peer + ")";
  welcome.accepted = 1;
  welcome.start_clock = start_clock;
  welcome.inbox_region = w.inbox->region().descriptor(Access::kRemoteWrite).serialize();
  try {
    ep->send_control(encode(welcome), kAnswerTimeout);
  } catch (const Error& e) {
    logf(LogLevel::kWarn, "%s: %s left during the handshake: %s", tag_.c_str(), w.name.c_str(), e.what());
    // Its inbox and copy too (a copy of the lane's range under DC), kept
    // until the endpoint closed: the worker may have read the welcome.
    w.ep = std::move(ep);
    release(w);
    return;
  }
  by_endpoint_[ep.get()] = w.id;
  w.ep = std::move(ep);
  // Only now: a worker that left during the handshake holds the clock where it was.
  w.clock = start_clock;
  // A new process under this id begins a step of its own: its first pieces,
  // pushed before any pull (which ends a step), were taken as more of its
  // predecessor's unfinished step (staleness one too low, the shard's
  // version not counted).
  w.stepped.clear();
  w.clock_since = Clock::now();
  w.stall_logged = false;
  w.live = true;
  w.connected_once = true;
  w.back_by = {};  // back: an earlier death's window is over
  w.reconnect_ms = admitted->reconnect_ms;
  live_[w.id].store(true, std::memory_order_seq_cst);
  done_.store(false, std::memory_order_relaxed);  // seen by whoever sees it reached (ServerImpl::job_done)
  reached_[w.id].store(true, std::memory_order_release);
  if (setup_.server->log_connections && setup_.index == 0)
    logf(LogLevel::kInfo, "%s: %s connected, push path %s, lanes: %s", server_tag_.c_str(), w.name.c_str(),
         use_am ? "am" : "put", w.ep->describe().c_str());
  update_min_clock();
  return;
}

}  // namespace rdmaps::ps
