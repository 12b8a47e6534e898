// The server's control thread (server_impl.h): set-up, the run loop, resume
// from a checkpoint, and the lanes' start; admission and statistics are in
// server_admission.cc and server_stats.cc.
#include <sched.h>

#include <algorithm>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "src/api/config_text.h"
#include "src/metrics/render.h"
#include "src/ps/context_options.h"
#include "src/ps/gpu_shard.h"
#include "src/ps/memory_plan.h"
#include "src/ps/server_impl.h"
#include "src/ps/shard_store.h"
#include "transport/auth.h"
#include "transport/idle_backoff.h"

namespace rdmaps {

uint32_t server_threads_for(const Config& config, uint64_t shards, bool gpu_shard) {
  const uint64_t want = config.server_threads ? config.server_threads : gpu_shard ? 1 : ps::usable_cores();
  return static_cast<uint32_t>(std::clamp<uint64_t>(want, 1, std::max<uint64_t>(shards, 1)));
}

namespace ps {

using namespace std::chrono_literals;

uint32_t usable_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return 1;
}

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
  if (const std::string why = config_error(options.config); !why.empty())
    throw Error(Errc::kInvalidArgument, "ServerOptions::config: " + why);
  // Negative: a log line every poll (-1 ms), a stall said at once.
  for (const auto& [field, value] :
       {std::pair{"stats_interval", options.stats_interval}, std::pair{"stall_warning", options.stall_warning}})
    if (value < std::chrono::milliseconds(0) || value > std::chrono::hours(24))
      throw Error(Errc::kInvalidArgument, std::string("ServerOptions::") + field + " is " +
                                              std::to_string(value.count()) + " ms: 0 (off) to 86400 s");
  return options;
}
}  // namespace

ServerImpl::ServerImpl(const ServerOptions& options)
    : options_(checked(options)), admission_(options_), tickets_(std::make_unique<AdmissionTicket[]>(options.workers)) {
  if (options.gpu_shard) gpu_device_ = require_gpu();  // refused now, clearly, without a device
  file_limit_ = transport::raise_open_file_limit();    // a few files per worker and lane
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
  address_ = listener_->address().to_string();
  admitted_at_.assign(options.workers, std::nullopt);
  forsaken_.assign(options.workers, std::nullopt);
  restored_pushes_.assign(options.workers, 0);
  resumed_clocks_.assign(options.workers, 0);
  awaited_.assign(options.workers, true);
  last_refusal_.assign(options.workers, std::string());
  if (checkpointer_.enabled()) checkpointer_.claim(options.index);
  while (instance_ == 0) transport::random_bytes(&instance_, sizeof(instance_));
  if (options.config.resume) resume();
  // Last: a refused metrics address leaves nothing half-started behind it.
  if (!options.metrics.empty())
    metrics_ = std::make_unique<metrics::HttpEndpoint>(
        options.metrics, "--metrics", [this] { return metrics::render_server_metrics(stats(), options_); });
}

ServerImpl::~ServerImpl() {
  stop();
  std::lock_guard<std::mutex> running(run_mu_);  // a run() on another thread returns first
  metrics_.reset();                              // no scrape reads the lanes while they go
  checkpointer_.wait();                          // a write in progress reads the lanes' snapshots
  for (auto& lane : lanes_) lane->stop();
  lanes_.clear();
  closing_.close_all(*context_);
}

ServerImpl::LanePlan ServerImpl::plan_lanes(const Config& config, const std::vector<TensorDecl>& table,
                                            const Checkpoint* checkpoint) const {
  LanePlan plan;
  plan.partition = std::make_unique<Partition>(table, options_.servers, config.shard_floats);
  plan.shards = plan.partition->shard_count(options_.index);
  plan.lanes = server_threads_for(config, plan.shards, options_.gpu_shard);
  plan.memory =
      server_memory_plan(plan.partition->server_range(options_.index).size(), plan.lanes, config, options_.gpu_shard);
  const MemoryPlan& memory = plan.memory;
  transport::AvailableMemory& available = plan.available;
  available = transport::available_memory();
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
  return plan;
}

std::string ServerImpl::no_memory_for_first(const transport::Endpoint& ep, const Hello& hello) const {
  const Config job = admission_.config_for(hello);
  const LanePlan plan = plan_lanes(job, hello.tensors, nullptr);
  // Its copy, as each lane decides (ServerLane::needs_copy; a host lane puts from its parameters where it may).
  const bool copy = write_back_copies(job.rule, uses_am(ep, hello)) || options_.gpu_shard || puts_emulated(ep, job);
  const uint64_t bytes =
      plan.lanes * inbox_bytes(job) + (copy ? plan.partition->server_range(options_.index).size() * sizeof(float) : 0);
  // What the Hello will meet "now": its lanes' parameters and state made and filled (a probe judged more
  // kindly passed, and the Hello after it was refused by this server alone).
  transport::AvailableMemory now = plan.available;
  now.bytes = now.bytes > plan.memory.shared ? now.bytes - plan.memory.shared : (now.bytes ? 1 : 0);
  now.bound += ", less the parameters and state its first worker has made";
  return MemoryBudget(plan.memory.fixed(), plan.available, options_.workers).refusal(hello.worker, bytes, now);
}

void ServerImpl::start_lanes(const Config& config, const std::vector<TensorDecl>& table, uint64_t staleness,
                             const Checkpoint* checkpoint) {
  LanePlan plan = plan_lanes(config, table, checkpoint);
  auto& partition = plan.partition;
  const uint32_t shards = plan.shards, lanes = plan.lanes;
  const MemoryPlan& memory = plan.memory;
  const transport::AvailableMemory& available = plan.available;
  if (auto warning = transport::file_limit_warning(options_.workers, lanes, file_limit_))
    logf(LogLevel::kWarn, "rdmaps-server: warning: %s", warning->c_str());
  planned_copies_ = memory.copies;
  memory_budget_ = MemoryBudget(memory.fixed(), available, options_.workers);
  taken_at_admission_.assign(options_.workers, 0);
  if (auto warning = memory_warning(memory, options_.workers, available, config.rule))
    logf(LogLevel::kWarn, "rdmaps-server: warning: %s", warning->c_str());
  std::vector<std::unique_ptr<ServerLane>> made;
  for (uint32_t l = 0; l < lanes; ++l) {
    LaneSetup s;
    s.index = l;
    s.lanes = lanes;
    s.server = &options_;
    s.config = config;
    s.staleness = staleness;
    s.partition = partition.get();
    s.first_shard = static_cast<uint32_t>(uint64_t{shards} * l / lanes);
    s.shards = static_cast<uint32_t>(uint64_t{shards} * (l + 1) / lanes) - s.first_shard;
    s.tickets = tickets_.get();
    s.free_later = &free_later_;
    s.planned_copies = memory.copies;
    s.said_unplanned_copy = &said_unplanned_copy_;
    s.gpu_device = gpu_device_;
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
  checkpointer_.start(base, checkpoint ? checkpoint->header.sequence : 0,
                      checkpoint ? checkpoint->header.earlier_job : 0, checkpoint ? checkpoint->header.updates() : 0);
  partition_ = std::move(partition);
  // Workers that gave up joining while this server had no table: its job starts without them.
  for (uint32_t w = 0; w < forsaken_.size(); ++w)
    if (forsaken_[w])
      for (auto& lane : made) lane->forsake(w, *forsaken_[w]);
  for (auto& lane : made) lane->start();
  std::lock_guard<std::mutex> lock(lanes_mu_);
  lanes_ = std::move(made);
  rule_ = rule_name(config.rule);
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
    busy |= joining_.poll(closing_, [&](uint32_t worker, uint64_t reconnect_ms) { forsake(worker, reconnect_ms); });
    free_later_.free_all();  // the lanes' dropped copies, unmapped here rather than on a lane
    refusals_.flush();
    const auto now = Clock::now();
    closing_.sweep();
    // Workers gone between admissions too: the copies their lanes never took are freed.
    if (now >= next_release_) {
      release_departed_budgets();
      next_release_ = now + 1s;
    }
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
  checkpointer_.release();  // this server writes no more: another of this process may take its directory
  // Workers hear of it from their connections closing; none is waited for,
  // idle or stopped (that cost 2 s: ClosingEndpoints::close_all).
  for (auto& lane : lanes_) lane->disconnect_all();
  refuse_latecomers(failed);
  // Where the server object outlives run() (C, Python), a Hello taken in now
  // waited out its timeout unanswered: closed, the port says nobody listens
  // and is free for the next job's server.
  listener_.reset();
  closing_.close_all(*context_);
  if (failed)
    throw Error(failed->failure_code(), "server " + std::to_string(options_.index) + " stopped: its lane " +
                                            std::to_string(failed->index()) + " failed: " + failed->failure());
}

// Hellos still waiting when the serving ends are answered: they met a closed
// connection. A retry may pass: a stopped server may be restarted, and the
// next job's server may start on the same address.
void ServerImpl::refuse_latecomers(const ServerLane* failed) {
  const bool stopped = stop_.load(std::memory_order_relaxed) || failed;
  const std::string why =
      stopped ? "the server is stopping" : "the job is over: every worker left, and the server exits";
  pending_.poll(*listener_, [&](std::unique_ptr<transport::Endpoint> ep, std::vector<uint8_t>) {
    refuse_peer(std::move(ep), why, kRefusedForNow);
  });
  for (auto& h : held_) refuse_peer(std::move(h.ep), why, kRefusedForNow);
  held_.clear();
  joining_.let_go(closing_);
}

void ServerImpl::resume() {
  const Config& config = options_.config;
  if (config.checkpoint_dir.empty())
    throw Error(Errc::kInvalidArgument, "--resume needs --checkpoint-dir: where should the checkpoint come from?");
  auto log = [](const std::string& line) { rdmaps::log(LogLevel::kInfo, "rdmaps-server: " + line); };
  auto found = load_newest_checkpoint(config.checkpoint_dir, options_.index, table_limit_bytes(options_), log);
  if (!found) {
    // Other indices' files and none of this one's: most likely the
    // directories of a job's servers swapped (ranks placed on other hosts),
    // and starting empty trained the model anew beside the one there.
    if (const std::vector<uint32_t> others = checkpoint_indices(config.checkpoint_dir); !others.empty()) {
      std::string listed;
      for (uint32_t i : others) listed += (listed.empty() ? "" : ", ") + std::to_string(i);
      throw Error(Errc::kInvalidArgument,
                  "--resume: " + config.checkpoint_dir + " holds checkpoints of server(s) " + listed +
                      " but none of this server, index " + std::to_string(options_.index) +
                      ": another server's directory (give this server its own, or its --index), the job's --servers "
                      "grew (a checkpoint resumes only with the --servers it was written for), or this server's "
                      "checkpoints are lost (start the job afresh, every server without --resume)");
    }
    // A warning: a mistyped directory trained from scratch and exited 0 behind an info line.
    rdmaps::log(LogLevel::kWarn, "rdmaps-server: --resume: no checkpoint of server " + std::to_string(options_.index) +
                                     " in " + config.checkpoint_dir +
                                     ": starting empty (a first start, or the wrong --checkpoint-dir?)");
    return;
  }
  Checkpoint& c = *found;
  const CheckpointHeader& h = c.header;
  auto refuse = [&](const std::string& why) {
    throw Error(Errc::kInvalidArgument, "cannot resume from '" + c.path + "': " + why);
  };
  // The servers lay out the table; the number of workers may change.
  if (h.index != options_.index || h.servers != options_.servers)
    refuse("it was written by server " + std::to_string(h.index) + " of " + std::to_string(h.servers) +
           "; this is server " + std::to_string(options_.index) + " of " + std::to_string(options_.servers) +
           " (the index and servers options, --index and --servers, must be the job's)");
  const size_t written_for = h.workers.size();
  c.header.resize_workers(options_.workers);
  if (h.shard_floats != config.shard_floats)
    refuse("its shards are " + std::to_string(h.shard_floats) + " floats, this server's " +
           std::to_string(config.shard_floats) + " (--shard-floats)");
  if (config.staleness_stated && h.staleness != config.staleness)
    refuse("it was written with staleness bound " + bound_text(h.staleness) + ", this server is given " +
           bound_text(config.staleness) +
           " (--staleness, or --sync for 0 and --async for inf; its workers would be refused)");
  std::optional<Partition> laid_out;
  try {
    laid_out.emplace(h.tensors, h.servers, h.shard_floats);
  } catch (const Error& e) {
    refuse(std::string("its table cannot be laid out: ") + e.what());
  }
  const Partition& partition = *laid_out;
  // The file's size bounded what was read (parameters and state); the table
  // is what a first worker could not have declared.
  if (std::string why = table_over_limit(h.tensors, h.shard_floats, options_); !why.empty()) refuse(why);
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
  admission_.restore(h.tensors, h.staleness, restored, h.job);
  checkpointer_.set_job(admission_.job());
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
      ", staleness bound " + bound_text(h.staleness) + ", " + describe_rule(restored) +
      "); updates applied after it were lost and its workers are expected back" +
      (written_for != options_.workers
           ? " (it was written for " + std::to_string(written_for) + " workers: each of the " +
                 std::to_string(options_.workers) + " starts afresh at clock " + std::to_string(slowest) + ")"
           : std::string()) +
      // The newest won, and the earlier job's model it kept was not mentioned.
      (h.earlier_job ? "; checkpoints up to " + std::to_string(h.earlier_job) + " in " + config.checkpoint_dir +
                           " are an earlier job's (a run without --resume began beside them), kept: to go on from "
                           "that model instead, move the files numbered above " +
                           std::to_string(h.earlier_job) + " away"
                     : std::string()));
}

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
namespace {
void refuse_in_forked_child(const ps::ServerImpl& impl, const char* call) {
  if (impl.in_forked_child())
    throw Error(Errc::kInvalidArgument, std::string(call) + ": this server belongs to process " +
                                            std::to_string(impl.owner_pid()) +
                                            ", not this forked child: a child makes its own server");
}
}  // namespace

void Server::run() {
  refuse_in_forked_child(*impl_, "run");
  impl_->run();
}
void Server::stop() {
  if (!impl_->in_forked_child()) impl_->stop();
}
ServerStats Server::stats() const {
  // Its lanes' lock may have been held by a parent thread at the fork (a child hung), and the counters are the
  // parent's as they were then.
  refuse_in_forked_child(*impl_, "stats");
  return impl_->stats();
}

}  // namespace rdmaps
