// The server's control thread: it listens at the server's address, admits
// workers (admission.h), starts the lanes that serve the data path
// (server_lane.h) once the first worker declared the table, and reports.
#include "rdmaps/server.h"

#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <optional>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "src/metrics/http_endpoint.h"
#include "src/metrics/render.h"
#include "src/ps/admission.h"
#include "src/ps/checkpointer.h"
#include "src/ps/context_options.h"
#include "src/ps/gpu_shard.h"
#include "src/ps/memory_plan.h"
#include "src/ps/partition.h"
#include "src/ps/pending_peers.h"
#include "src/ps/protocol.h"
#include "src/ps/quantile.h"
#include "src/ps/refusal_log.h"
#include "src/ps/server_lane.h"
#include "src/ps/server_report.h"
#include "transport/auth.h"
#include "transport/context.h"
#include "transport/file_limit.h"
#include "transport/idle_backoff.h"
#include "transport/process_id.h"

namespace rdmaps {

namespace {
// The bucket of `h` the q-quantile falls in; the last one counts every tau
// from its index on (0 when `h` counts nothing).
size_t quantile_bucket(const std::vector<uint64_t>& h, double q) {
  return h.empty() ? 0 : std::min(ps::quantile_index(h, q), h.size() - 1);
}
}  // namespace

double ServerStats::staleness_quantile(double q) const { return static_cast<double>(quantile_bucket(staleness, q)); }

std::string ServerStats::staleness_quantile_text(double q) const {
  const size_t bucket = quantile_bucket(staleness, q);
  // The last bucket holds every tau from its index on: only a lower bound is known.
  const bool overflow = !staleness.empty() && bucket == staleness.size() - 1 && staleness.back() > 0;
  return (overflow ? ">=" : "") + std::to_string(bucket);
}

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {
constexpr auto kHelloTimeout = 5s;      // a connected peer's first message
constexpr auto kAnswerTimeout = 100ms;  // a Welcome: small, into an empty socket buffer
// A Hello for a worker id the lanes still hold waits this long for them to
// see the earlier connection close: a worker restarted right after it died
// (by a job script, or a launcher) comes back before they noticed.
constexpr auto kPredecessorWait = 3s;
// An admitted worker connects to every lane within this, or is taken to have
// stopped while it connected (said by report(); the job may end without it).
constexpr auto kReachWindow = 5s;

// The worker id is connected on some lane: refused only once kPredecessorWait passed.
struct StillConnected : Error {
  using Error::Error;
};

// Cores this process may run on (its affinity mask, e.g. under srun or taskset).
uint32_t usable_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return 1;
}
}  // namespace

uint32_t server_threads_for(const Config& config, uint64_t shards, bool gpu_shard) {
  const uint64_t want = config.server_threads ? config.server_threads : gpu_shard ? 1 : usable_cores();
  return static_cast<uint32_t>(std::clamp<uint64_t>(want, 1, std::max<uint64_t>(shards, 1)));
}

namespace ps {

namespace {
// Checked before anything is sized by them: 4294967295 workers must be refused, not allocated for.
const ServerOptions& checked(const ServerOptions& options) {
  if (options.servers == 0 || options.servers > kMaxServers)
    throw Error(Errc::kInvalidArgument, "a job has 1 to " + std::to_string(kMaxServers) + " servers, not " +
                                            std::to_string(options.servers) + " (the servers option, --servers)");
  if (options.index >= options.servers)
    throw Error(Errc::kInvalidArgument, "server index " + std::to_string(options.index) + " is not below the " +
                                            std::to_string(options.servers) +
                                            " servers (the index and servers options, --index and --servers)");
  if (options.workers == 0 || options.workers > kMaxWorkers)
    throw Error(Errc::kInvalidArgument, "a server serves 1 to " + std::to_string(kMaxWorkers) + " workers, not " +
                                            std::to_string(options.workers) + " (the workers option, --workers)");
  // As the command line refuses them; a Config built in code skips it.
  for (const std::string& why : {RuleParams::from(options.config).out_of_range(), config_error(options.config)})
    if (!why.empty()) throw Error(Errc::kInvalidArgument, "ServerOptions::config: " + why);
  // Negative: a log line every poll (-1 ms), a stall said at once.
  for (const auto& [field, value] :
       {std::pair{"stats_interval", options.stats_interval}, std::pair{"stall_warning", options.stall_warning}})
    if (value < std::chrono::milliseconds(0) || value > std::chrono::hours(24))
      throw Error(Errc::kInvalidArgument, std::string("ServerOptions::") + field + " is " +
                                              std::to_string(value.count()) + " ms: 0 (off) to 86400 s");
  return options;
}
}  // namespace

class ServerImpl {
 public:
  explicit ServerImpl(const ServerOptions& options)
      : options_(checked(options)),
        admission_(options_),
        tickets_(std::make_unique<AdmissionTicket[]>(options.workers)) {
    if (options.gpu_shard) require_gpu();              // refused now, clearly, without a device
    file_limit_ = transport::raise_open_file_limit();  // a few files per worker and lane
    const auto listen = transport::SockAddr::parse(options.listen);
    const bool loopback = listen.is_loopback();  // UCX stays there too (ContextOptions::loopback_only)
    if (options.config.secret.empty() && !options.insecure && !loopback)
      throw Error(Errc::kInvalidArgument,
                  "refusing to serve on " + options.listen +
                      " without a shared secret: anyone who reaches it could read and overwrite the model. Give "
                      "--secret-file FILE (or RDMAPS_SECRET) to every server and worker, listen on 127.0.0.1, or set "
                      "the insecure option (--insecure) (docs/security.md)");
    context_ = transport::create_context(context_options(options.config, "rdmaps-server", loopback));
    listener_ = context_->listen(listen);
    admitted_at_.assign(options.workers, std::nullopt);
    restored_pushes_.assign(options.workers, 0);
    resumed_clocks_.assign(options.workers, 0);
    awaited_.assign(options.workers, true);
    if (checkpointer_.enabled()) checkpointer_.claim(options.index);
    while (instance_ == 0) transport::random_bytes(&instance_, sizeof(instance_));
    if (options.config.resume) resume();
    // Last: a refused metrics address leaves nothing half-started behind it.
    if (!options.metrics.empty())
      metrics_ = std::make_unique<metrics::HttpEndpoint>(
          options.metrics, "--metrics", [this] { return metrics::render_server_metrics(stats(), options_); });
  }

  ~ServerImpl() {
    stop();
    std::lock_guard<std::mutex> running(run_mu_);  // a run() on another thread returns first
    metrics_.reset();                              // no scrape reads the lanes while they go
    checkpointer_.wait();                          // a write in progress reads the lanes' snapshots
    for (auto& lane : lanes_) lane->stop();
    lanes_.clear();
    closing_.close_all(*context_);
  }

  std::string address() const { return listener_->address().to_string(); }
  std::string metrics_address() const { return metrics_ ? metrics_->address() : ""; }
  /// A copy made by fork(): its threads, endpoints and listening socket are the parent's.
  bool in_forked_child() const { return owner_pid_ != transport::this_process_id(); }
  pid_t owner_pid() const { return owner_pid_; }
  void stop() { stop_.store(true); }
  ServerStats stats() const;
  bool applied_any() const;  ///< whether a lane applied any push: it holds a job's parameters
  void run();

 private:
  /// Answers a Hello received at `since` (`retried`: held before): admits the worker, refuses
  /// it, or holds it while its id's earlier connection may still be closing; never throws.
  void admit(std::unique_ptr<transport::Endpoint> ep, std::vector<uint8_t> message, Clock::time_point since,
             bool retried = false);
  /// Answers a Welcome that refuses, with its reason, and closes once the peer read it.
  void refuse_peer(std::unique_ptr<transport::Endpoint> ep, const std::string& why, uint32_t code);
  /// Refuses the Hello held for `worker`, if any: `newer` connected with that id since.
  void refuse_held(uint32_t worker, const std::string& newer);
  /// Keeps a Hello whose id is still connected, to be tried again; an older
  /// one held for that id is refused (its worker restarted once more).
  void hold(std::unique_ptr<transport::Endpoint> ep, std::vector<uint8_t> message, Clock::time_point since,
            uint32_t worker);
  /// Throws Error with the reason to refuse; fills and sends the Welcome otherwise.
  void admit_checked(transport::Endpoint& ep, const Hello& hello, Welcome& welcome);
  /// Splits this server's shards into lanes and starts them (restored from
  /// `checkpoint` when given); throws Error on failure.
  void start_lanes(const Config& config, const std::vector<TensorDecl>& table, uint64_t staleness,
                   const Checkpoint* checkpoint = nullptr);
  /// Config::resume: serves the newest valid checkpoint's state, if there is one.
  void resume();
  /// Every lane done() and no worker admitted in the last kReachWindow still
  /// on its way to them (exit_when_done: the job is over).
  bool job_done(Clock::time_point now) const;
  /// A lane whose thread stopped on an error, if any: the server stops.
  const ServerLane* failed_lane() const;
  /// Pushes taken in (applied or dropped) by every lane, this process.
  uint64_t updates_taken() const;
  void report(Clock::time_point now);

  ServerOptions options_;
  const pid_t owner_pid_ = transport::this_process_id();
  Admission admission_;
  MemoryToFree free_later_;  // before the tickets and lanes, whose copies end up here
  std::unique_ptr<AdmissionTicket[]> tickets_;
  std::unique_ptr<transport::Context> context_;  // destroyed after the endpoints below
  std::unique_ptr<transport::Listener> listener_;
  PendingPeers pending_{"rdmaps-server", kHelloTimeout, kMaxHelloBytes};
  RefusalLog refusals_{"rdmaps-server"};  // a flood of bad Hellos must not flood the log
  std::unique_ptr<Partition> partition_;
  mutable std::mutex lanes_mu_;  // lanes_ is filled once, while stats() may read it
  std::vector<std::unique_ptr<ServerLane>> lanes_;
  std::vector<std::optional<Clock::time_point>> admitted_at_;  // by worker: its latest admission, if any
  Checkpointer checkpointer_{options_.config, options_.log_connections};
  bool resumed_ = false;
  uint64_t resumed_updates_ = 0;
  std::vector<uint64_t> restored_pushes_;  // by worker: its pushes the resumed checkpoint holds
  std::vector<uint64_t> resumed_clocks_;   // by worker: the clock the resumed checkpoint expects it back at, or 0
  std::vector<bool> awaited_;    // by worker: the clock holds until it connects (not one a checkpoint saw leave)
  uint64_t instance_ = 0;        // random: this server process, as its workers know it
  bool planned_copies_ = false;  // the memory plan counted a copy of the range per worker
  bool said_unplanned_copy_ = false;
  ClosingEndpoints closing_;  // control connections, closed once the worker closed its side
  struct Held {
    std::unique_ptr<transport::Endpoint> ep;
    std::vector<uint8_t> message;
    Clock::time_point since;
    uint32_t worker;
  };
  // Hellos waiting for their id's earlier connection to be seen closed: at
  // most one per id, so that they are bounded by the job's size.
  std::vector<Held> held_;
  Clock::time_point last_report_ = Clock::now(), last_waiting_ = Clock::now();
  ServerStats last_stats_;
  std::atomic<bool> stop_{false};
  std::mutex run_mu_;  // held by run(): the destructor waits for it
  bool ran_ = false;   // under run_mu_
  std::atomic<bool> final_checkpoint_failed_{false};
  transport::FileLimit file_limit_;
  std::string rule_;                                // the lanes' update rule, under lanes_mu_
  std::unique_ptr<metrics::HttpEndpoint> metrics_;  // declared last: stopped before anything it reads goes
};

void ServerImpl::start_lanes(const Config& config, const std::vector<TensorDecl>& table, uint64_t staleness,
                             const Checkpoint* checkpoint) {
  auto partition = std::make_unique<Partition>(table, options_.servers, config.shard_floats);
  const uint32_t shards = partition->shard_count(options_.index);
  const uint32_t lanes = server_threads_for(config, shards, options_.gpu_shard);
  if (auto warning = transport::file_limit_warning(options_.workers, lanes, file_limit_))
    logf(LogLevel::kWarn, "rdmaps-server: warning: %s", warning->c_str());
  const MemoryPlan memory =
      server_memory_plan(partition->server_range(options_.index).size(), lanes, config, options_.gpu_shard);
  transport::AvailableMemory available = transport::available_memory();
  // A resume's checkpoint, read into memory, is freed once the lanes restored
  // it, before a snapshot or a worker's copy is made: counted against the
  // plan, it refused a resume the run before had room for.
  // Both are held at once while the lanes restore it, though: what is
  // available now (the checkpoint already read) must hold the table.
  if (const uint64_t read = checkpoint ? (checkpoint->params.size() + checkpoint->state.size()) * sizeof(float) : 0;
      read && available.bytes) {
    if (memory.shared > available.bytes)
      throw Error(Errc::kNoMemory, "resuming needs the table restored from the checkpoint (" +
                                       std::to_string(memory.shared >> 20) + " MiB) beside the checkpoint read (" +
                                       std::to_string(read >> 20) + " MiB); " + available.bound + " leaves " +
                                       std::to_string(available.bytes >> 20) + " MiB");
    available.bytes += read;
    available.bound += " and the checkpoint being resumed, freed once restored";
  }
  // Before any lane allocates: a server killed by the kernel mid-run says nothing.
  if (auto refusal = memory_refusal(memory, available, config.rule)) throw Error(Errc::kNoMemory, *refusal);
  planned_copies_ = memory.copies;
  if (auto warning = memory_warning(memory, options_.workers, available, config.rule))
    logf(LogLevel::kWarn, "rdmaps-server: warning: %s", warning->c_str());
  std::vector<std::unique_ptr<ServerLane>> made;
  for (uint32_t l = 0; l < lanes; ++l) {
    LaneSetup s;
    s.index = l;
    s.lanes = lanes;
    s.server = &options_;
    s.config = config;
    s.partition = partition.get();
    s.first_shard = static_cast<uint32_t>(uint64_t{shards} * l / lanes);
    s.shards = static_cast<uint32_t>(uint64_t{shards} * (l + 1) / lanes) - s.first_shard;
    s.tickets = tickets_.get();
    s.free_later = &free_later_;
    made.push_back(std::make_unique<ServerLane>(s));
    if (checkpoint) made.back()->restore(*checkpoint);
  }
  CheckpointHeader base;
  base.index = options_.index;
  base.servers = options_.servers;
  base.shard_floats = config.shard_floats;
  base.staleness = staleness;
  base.rule = RuleParams::from(config);
  base.tensors = table;
  checkpointer_.start(base, checkpoint ? checkpoint->header.sequence : 0);
  partition_ = std::move(partition);
  for (auto& lane : made) lane->start();
  std::lock_guard<std::mutex> lock(lanes_mu_);
  lanes_ = std::move(made);
  rule_ = rule_name(config.rule);
}

void ServerImpl::admit(std::unique_ptr<transport::Endpoint> ep, std::vector<uint8_t> message, Clock::time_point since,
                       bool retried) {
  const std::string peer = ep->peer_name();
  Welcome welcome;
  auto close_later = [&] { closing_.add(std::move(ep)); };
  auto refuse = [&](const std::string& why, uint32_t code = kRefused) { refuse_peer(std::move(ep), why, code); };
  // Nothing a refused Hello said survives it: the table and rule are fixed
  // only by admission_.admit() below, after every check passed.
  uint32_t worker = 0;
  try {
    const Hello hello = decode_hello(message, peer);
    worker = hello.worker;
    if (hello.probe) {  // would it be admitted? Nothing is fixed, nothing held for it
      if (std::string why = admission_.check(hello); !why.empty()) return refuse(why);
      welcome.accepted = kWouldAdmit;
      welcome.instance = instance_;  // a worker given one server twice (two spellings) sees it
      // ... and a job where some servers hold parameters and others none.
      welcome.resumed = resumed_ || applied_any() ? kProbeHolding
                        : admission_.has_table()  ? kProbeStarted
                                                  : kProbeFresh;
      ep->send_control(encode(welcome), kAnswerTimeout);
      return close_later();
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
        logf(LogLevel::kInfo, "rdmaps-server: %s (worker %u) is held: its id's earlier connection still looks live",
             peer.c_str(), worker);
      return hold(std::move(ep), std::move(message), since, worker);
    }
    return refuse(std::string(e.what()) + " (waited " + std::to_string(kPredecessorWait.count()) +
                      " s for its earlier connection to close)",
                  kRefusedForNow);
  } catch (const std::bad_alloc&) {
    return refuse("out of memory while admitting it", kRefusedForNow);
  } catch (const Error& e) {
    // What the worker asked for, or how it asked, stays refused; a resource may free up.
    const bool for_good =
        e.code() == Errc::kPermissionDenied || e.code() == Errc::kInvalidArgument || e.code() == Errc::kProtocol;
    return refuse(e.what(), for_good ? kRefused : kRefusedForNow);
  } catch (const std::exception& e) {
    return refuse(e.what(), kRefusedForNow);
  }
  close_later();  // the worker goes on with the lanes
}

void ServerImpl::refuse_peer(std::unique_ptr<transport::Endpoint> ep, const std::string& why, uint32_t code) {
  refusals_.warn("refused " + ep->peer_name() + ": " + why);
  Welcome welcome;
  welcome.accepted = code;
  welcome.reason = why;
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
  const auto still_connected = [&] {
    for (const auto& lane : lanes_)
      if (lane->live_or_admitting(hello.worker))
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
    if (!admission_.has_table()) start_lanes(admission_.config_for(hello), hello.tensors, hello.staleness);
    copies.resize(lanes_.size());
    admission_.admit(hello);
    const PushPath wanted = static_cast<PushPath>(hello.push_path);
    use_am = wanted == PushPath::kAm || (wanted == PushPath::kAuto && !ep.rma_native());
    // The worker's copy of each lane's range, where the lane keeps one, made
    // and faulted in here, so that the lane only registers it: a lane faulting
    // it in held every other worker on it (0.43 s for a 128 MB range). This
    // thread serves no push; the worker waits for it as it waited for the
    // lanes, and on as many cores as they had.
    try {
      for (size_t l = 0; l < lanes_.size(); ++l)
        if (lanes_[l]->needs_copy(use_am)) copies[l] = HostPages(lanes_[l]->copy_bytes());
      if (use_am && !planned_copies_ && !said_unplanned_copy_ && !copies.empty() && copies.front()) {
        said_unplanned_copy_ = true;
        logf(LogLevel::kWarn,
             "rdmaps-server: warning: worker %u asked for the active-message push path: each such worker takes a "
             "copy of this server's range (%s) that the memory plan did not count (give the server --push-path am "
             "to plan for it)",
             hello.worker,
             transport::size_text(partition_->server_range(options_.index).size() * sizeof(float)).c_str());
      }
      fault_in(copies, std::min<uint32_t>(usable_cores(), static_cast<uint32_t>(lanes_.size())));
    } catch (const Error& e) {
      throw Error(e.code(), std::string("server has no memory for this worker's copy of its range: ") + e.what());
    }
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
  welcome.instance = instance_;
  welcome.pushes_held = restored_pushes_[hello.worker];
  for (const auto& lane : lanes_)
    welcome.pushes_held += lane->counters().taken[hello.worker].load(std::memory_order_relaxed);
  try {
    ep.send_control(encode(welcome), kAnswerTimeout);
  } catch (const Error& e) {
    logf(LogLevel::kWarn, "rdmaps-server: worker %u (%s) left during the handshake: %s", hello.worker, peer.c_str(),
         e.what());
  }
  admitted_at_[hello.worker] = Clock::now();
}

const ServerLane* ServerImpl::failed_lane() const {
  for (const auto& lane : lanes_)
    if (lane->failed()) return lane.get();
  return nullptr;
}

bool ServerImpl::job_done(Clock::time_point now) const {
  if (lanes_.empty()) return false;
  // Admitted lately and not at every lane yet: on its way (a Hello held while
  // its dead predecessor still looked live, then admitted as the lanes saw
  // the last worker go, was welcomed to lanes that had ended the job). Read
  // before done(): a lane it reached is seen not done.
  for (uint32_t w = 0; w < options_.workers; ++w)
    if (admitted_at_[w] && now - *admitted_at_[w] < kReachWindow)
      for (const auto& lane : lanes_)
        if (!lane->reached(w)) return false;
  for (const auto& lane : lanes_)
    if (!lane->done()) return false;
  return true;
}

uint64_t ServerImpl::updates_taken() const {
  uint64_t n = 0;
  for (const auto& lane : lanes_)
    n += lane->counters().pushes.load(std::memory_order_relaxed) +
         lane->counters().dropped.load(std::memory_order_relaxed);
  return n;
}

bool ServerImpl::applied_any() const {
  std::lock_guard<std::mutex> lock(lanes_mu_);
  for (const auto& lane : lanes_)
    if (lane->counters().pushes.load(std::memory_order_relaxed)) return true;
  return false;
}

ServerStats ServerImpl::stats() const {
  ServerStats s;
  s.applied_per_worker.assign(options_.workers, 0);
  s.rejected_per_worker.assign(options_.workers, 0);
  s.bytes_in_per_worker.assign(options_.workers, 0);
  std::lock_guard<std::mutex> lock(lanes_mu_);
  s.lanes = static_cast<uint32_t>(lanes_.size());
  s.staleness.assign(kStalenessBuckets, 0);
  s.min_clock = lanes_.empty() ? 0 : UINT64_MAX;
  s.rule = rule_;
  s.apply_latency.counts.assign(kDurationBuckets, 0);
  s.write_back_latency.counts.assign(kDurationBuckets, 0);
  std::vector<uint64_t> by_reason(kRejectReasons, 0);
  auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  for (const auto& lane : lanes_) {
    const LaneCounters& c = lane->counters();
    s.pushes += get(c.pushes);
    s.bytes_in += get(c.bytes_in);
    s.bytes_out += get(c.bytes_out);
    s.pulls += get(c.pulls);
    s.clocks += get(c.clocks);
    s.rejected += get(c.rejected);
    s.dropped += get(c.dropped);
    s.workers_left += get(c.workers_left);
    s.workers_lost += get(c.workers_lost);
    s.min_clock = std::min(s.min_clock, get(c.min_clock));
    s.longest_setup_pause_us = std::max(s.longest_setup_pause_us, get(c.longest_setup_us));
    s.stall_warnings += get(c.stall_warnings);
    for (uint32_t w = 0; w < options_.workers; ++w) {
      s.applied_per_worker[w] += get(c.applied[w]);
      s.rejected_per_worker[w] += get(c.rejected_by[w]);
      s.bytes_in_per_worker[w] += get(c.bytes_from[w]);
    }
    for (size_t t = 0; t < s.staleness.size(); ++t) s.staleness[t] += get(c.staleness[t]);
    s.staleness_sum += get(c.staleness_sum);
    s.staleness_max = std::max(s.staleness_max, get(c.staleness_max));
    s.max_clock = std::max(s.max_clock, get(c.max_clock));
    for (size_t r = 0; r < kRejectReasons; ++r) by_reason[r] += get(c.rejected_for[r]);
    for (size_t b = 0; b < kDurationBuckets; ++b) {
      s.apply_latency.counts[b] += get(c.apply_latency[b]);
      s.write_back_latency.counts[b] += get(c.write_back_latency[b]);
    }
    s.apply_latency.sum_ns += get(c.apply_ns);
    s.write_back_latency.sum_ns += get(c.write_back_ns);
  }
  // Every lane sees every connection: the first one speaks for the server.
  if (!lanes_.empty())
    for (uint32_t w = 0; w < options_.workers; ++w) s.workers_connected += lanes_[0]->live(w) ? 1 : 0;
  for (size_t r = 0; r < kRejectReasons; ++r)
    s.rejected_by_reason.emplace_back(reject_reason_name(static_cast<RejectReason>(r)), by_reason[r]);
  s.checkpoints = checkpointer_.written();
  s.checkpoint_failures = checkpointer_.failed();
  s.checkpoint_updates = checkpointer_.last_updates();
  s.final_checkpoint_failed = final_checkpoint_failed_.load();
  s.resumed_updates = resumed_updates_;
  return s;
}

void ServerImpl::report(Clock::time_point now) {
  if (now - last_waiting_ > 10s) {
    last_waiting_ = now;
    std::string missing;
    for (uint32_t w = 0; w < options_.workers; ++w)
      if (!admitted_at_[w] && awaited_[w]) missing += (missing.empty() ? "" : ", ") + std::to_string(w);
    if (!missing.empty())
      logf(LogLevel::kInfo, "rdmaps-server: waiting for workers %s to connect to %s (the clock holds at %llu)",
           missing.c_str(), address().c_str(), static_cast<unsigned long long>(stats().min_clock));
    // Admitted, then gone before it reached every lane (killed while it
    // connected): the lanes it never reached hold their clock for it.
    for (uint32_t w = 0; w < options_.workers; ++w) {
      if (!admitted_at_[w] || now - *admitted_at_[w] < kReachWindow) continue;  // one connecting now
      std::string lanes;
      for (const auto& lane : lanes_)
        if (!lane->reached(w)) lanes += (lanes.empty() ? "" : ", ") + std::to_string(lane->index());
      if (!lanes.empty())
        logf(LogLevel::kWarn,
             "rdmaps-server: worker %u was admitted but never reached lane(s) %s, whose clock holds for it: it "
             "stopped while it connected? Start it again with the same id",
             w, lanes.c_str());
    }
  }
  if (options_.stats_interval.count() == 0 || now - last_report_ < options_.stats_interval) return;
  ServerStats s = stats();
  logf(LogLevel::kInfo, "%s",
       interval_report(s, last_stats_, std::chrono::duration<double>(now - last_report_).count(), lanes_.size())
           .c_str());
  last_stats_ = s;
  last_report_ = now;
}

void ServerImpl::run() {
  // One job per server, served by one thread: a second run() at once would
  // drive the same UCX worker from two threads, a later one finds the job over.
  std::unique_lock<std::mutex> running(run_mu_, std::try_to_lock);
  if (!running.owns_lock())
    throw Error(Errc::kInvalidArgument, "run: this server is already running on another thread");
  if (ran_) throw Error(Errc::kInvalidArgument, "run: this server's job is over; make another server");
  ran_ = true;
  // The control thread admits and reports; the lanes carry the data. Waiting
  // here may sleep up to half a millisecond: it delays a connection, not a push.
  transport::IdleBackoff idle;
  while (!stop_.load(std::memory_order_relaxed)) {
    bool busy = context_->progress() != 0;
    busy |= pending_.poll(*listener_, [this](std::unique_ptr<transport::Endpoint> ep, std::vector<uint8_t> message) {
      admit(std::move(ep), std::move(message), Clock::now());
    });
    if (!held_.empty()) {
      auto held = std::move(held_);
      held_.clear();
      for (auto& h : held) {
        // Gone while held: nothing is made for it (a copy of every lane's range was).
        if (h.ep->peer_closed() || h.ep->failed()) {
          log(LogLevel::kInfo, "rdmaps-server: " + h.ep->peer_name() + " (worker " + std::to_string(h.worker) +
                                   ") closed its connection while its Hello waited for its earlier one to close");
          closing_.add(std::move(h.ep));
          continue;
        }
        admit(std::move(h.ep), std::move(h.message), h.since, true);
      }
    }
    free_later_.free_all();  // the lanes' dropped copies, unmapped here rather than on a lane
    const auto now = Clock::now();
    closing_.sweep();
    report(now);
    if (checkpointer_.enabled()) checkpointer_.tick(lanes_, updates_taken());
    if (options_.exit_when_done && closing_.empty() && held_.empty() && job_done(now)) break;
    if (failed_lane()) break;
    idle.pause(busy);
  }
  for (auto& lane : lanes_) lane->stop();
  for (auto& lane : lanes_) lane->join();
  const ServerLane* failed = failed_lane();
  // A failed lane's shards may hold a half-applied update: the newest
  // periodic checkpoint stays the one to resume from.
  if (failed && checkpointer_.enabled()) {
    logf(LogLevel::kError, "rdmaps-server: no final checkpoint: a lane failed");
    final_checkpoint_failed_ = true;
  } else {
    final_checkpoint_failed_ = !checkpointer_.finish(lanes_, updates_taken());  // the model as training left it
  }
  // Workers hear of it from their connections closing; none is waited for,
  // idle or stopped (that cost 2 s: ClosingEndpoints::close_all).
  for (auto& lane : lanes_) lane->disconnect_all();
  held_.clear();
  closing_.close_all(*context_);
  if (failed)
    throw Error(failed->failure_code(), "server " + std::to_string(options_.index) + " stopped: its lane " +
                                            std::to_string(failed->index()) + " failed: " + failed->failure());
}

void ServerImpl::resume() {
  const Config& config = options_.config;
  if (config.checkpoint_dir.empty())
    throw Error(Errc::kInvalidArgument, "--resume needs --checkpoint-dir: where should the checkpoint come from?");
  auto log = [](const std::string& line) { rdmaps::log(LogLevel::kInfo, "rdmaps-server: " + line); };
  auto found = load_newest_checkpoint(config.checkpoint_dir, options_.index, table_limit_bytes(options_), log);
  if (!found) {
    log("no checkpoint of server " + std::to_string(options_.index) + " in " + config.checkpoint_dir +
        ": starting empty");
    return;
  }
  Checkpoint& c = *found;
  const CheckpointHeader& h = c.header;
  auto refuse = [&](const std::string& why) {
    throw Error(Errc::kInvalidArgument, "cannot resume from '" + c.path + "': " + why);
  };
  if (h.index != options_.index || h.servers != options_.servers || h.workers.size() != options_.workers)
    refuse("it was written by server " + std::to_string(h.index) + " of " + std::to_string(h.servers) + " for " +
           std::to_string(h.workers.size()) + " workers; this is server " + std::to_string(options_.index) + " of " +
           std::to_string(options_.servers) + " for " + std::to_string(options_.workers) +
           " (the index, servers and workers options, --index, --servers and --workers, must be the job's)");
  if (h.shard_floats != config.shard_floats)
    refuse("its shards are " + std::to_string(h.shard_floats) + " floats, this server's " +
           std::to_string(config.shard_floats) + " (--shard-floats)");
  if (config.staleness_stated && h.staleness != config.staleness)
    refuse("it was written with staleness bound " + bound_text(h.staleness) + ", this server is given " +
           bound_text(config.staleness) + " (--staleness; its workers would be refused)");
  std::optional<Partition> laid_out;
  try {
    laid_out.emplace(h.tensors, h.servers, h.shard_floats);
  } catch (const Error& e) {
    refuse(std::string("its table cannot be laid out: ") + e.what());
  }
  const Partition& partition = *laid_out;
  // The file's size bounded what was read (parameters and state); the table
  // is what a first worker could not have declared.
  if (std::string why = table_over_limit(h.tensors, options_); !why.empty()) refuse(why);
  auto mismatch = [&](const char* what, uint64_t has, uint64_t table) {
    refuse("it holds " + std::to_string(has) + " " + what + " where the table it declares needs " +
           std::to_string(table));
  };
  if (c.params.size() != partition.server_range(h.index).size())
    mismatch("parameters", c.params.size(), partition.server_range(h.index).size());
  if (h.versions.size() != partition.shard_count(h.index))
    mismatch("shard versions", h.versions.size(), partition.shard_count(h.index));
  if (!c.state.empty() && c.state.size() != c.params.size())
    mismatch("optimizer state floats", c.state.size(), c.params.size());
  Config restored = config;
  if (options_.rule_from_workers) {
    if (std::string why = h.rule.out_of_range(); !why.empty()) refuse("its update rule cannot be adopted: " + why);
    h.rule.apply_to(restored);
  } else if (std::string d = RuleParams::from(config).difference(h.rule); !d.empty()) {
    log("resuming with this server's update rule, not the checkpoint's (" + d + ", this server's first)");
  }
  // Another rule's optimizer state means something else (a momentum buffer is
  // no mean square): read as this rule's, it made the first step NaN.
  if (static_cast<uint32_t>(restored.rule) != h.rule.rule && !c.state.empty()) {
    log(std::string("the checkpoint's optimizer state belongs to rule ") +
        rule_name(static_cast<UpdateRule>(h.rule.rule)) + ": " + rule_name(restored.rule) +
        " starts with fresh state (the parameters are resumed)");
    c.state.clear();
  }
  admission_.restore(h.tensors, h.staleness, restored);
  start_lanes(restored, h.tensors, h.staleness, &c);
  resumed_ = true;
  resumed_updates_ = h.updates();
  uint64_t slowest = UINT64_MAX;
  for (size_t w = 0; w < h.workers.size(); ++w) {
    restored_pushes_[w] = h.workers[w].pushes;
    if (h.awaits(w)) resumed_clocks_[w] = h.resumed_clock(w);
    awaited_[w] = h.awaits(w);
    if (h.workers[w].state != WorkerState::kGone) slowest = std::min(slowest, h.workers[w].clock);
  }
  log("resumed from " + c.path + " (checkpoint " + std::to_string(h.sequence) + ", " + std::to_string(h.updates()) +
      " updates, slowest clock " + (slowest == UINT64_MAX ? std::string("-") : std::to_string(slowest)) +
      "); updates applied after it were lost and its workers are expected back");
}

// ---- public face -------------------------------------------------------------

}  // namespace ps

// The public Server forwards to its implementation.
using ps::ServerImpl;

Server::Server(const ServerOptions& options) : impl_(std::make_unique<ServerImpl>(options)) {}
Server::~Server() {
  // In a forked child: stopping and joining threads the child does not have
  // hung it, and closing the parent's endpoints and socket would end the
  // parent's serving. The child's exit frees the memory.
  if (impl_ && impl_->in_forked_child()) static_cast<void>(impl_.release());
}
std::string Server::address() const { return impl_->address(); }
std::string Server::metrics_address() const { return impl_->metrics_address(); }
void Server::run() {
  if (impl_->in_forked_child())
    throw Error(Errc::kInvalidArgument, "run: this server belongs to process " + std::to_string(impl_->owner_pid()) +
                                            ", not this forked child: a child makes its own server");
  impl_->run();
}
void Server::stop() {
  if (!impl_->in_forked_child()) impl_->stop();
}
ServerStats Server::stats() const { return impl_->stats(); }

}  // namespace rdmaps
