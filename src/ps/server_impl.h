// The server behind rdmaps::Server (include/rdmaps/server.h): one control
// thread that admits workers, starts the lanes that carry the data path
// (server_lane.h) and reports. Its work is split by concern: server.cc
// (set-up, run, resume, the lanes' start), server_admission.cc (a Hello
// admitted, held or refused), server_stats.cc (ServerStats from the lanes'
// counters, and the periodic report).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "rdmaps/server.h"
#include "src/metrics/http_endpoint.h"
#include "src/ps/admission.h"
#include "src/ps/checkpoint.h"
#include "src/ps/checkpointer.h"
#include "src/ps/closing_endpoints.h"
#include "src/ps/joining_workers.h"
#include "src/ps/memory_plan.h"
#include "src/ps/partition.h"
#include "src/ps/pending_peers.h"
#include "src/ps/protocol.h"
#include "src/ps/refusal_log.h"
#include "src/ps/server_lane.h"
#include "src/ps/worker_copy.h"
#include "transport/context.h"
#include "transport/file_limit.h"
#include "transport/process_id.h"

namespace rdmaps::ps {

/// Cores this process may run on (its affinity mask, e.g. under srun or taskset).
uint32_t usable_cores();

class ServerImpl {
 public:
  explicit ServerImpl(const ServerOptions& options);
  ~ServerImpl();
  ServerImpl(const ServerImpl&) = delete;
  ServerImpl& operator=(const ServerImpl&) = delete;

  std::string address() const { return address_; }
  std::string metrics_address() const { return metrics_ ? metrics_->address() : ""; }
  /// A copy made by fork(): its threads, endpoints and listening socket are the parent's.
  bool in_forked_child() const { return owner_pid_ != transport::this_process_id(); }
  pid_t owner_pid() const { return owner_pid_; }
  void stop() { stop_.store(true); }
  ServerStats stats() const;
  bool applied_any() const;  ///< whether a lane applied any push: it holds a job's parameters
  void run();

 private:
  using Clock = std::chrono::steady_clock;
  // In the class, not the namespace: a unity build puts other files' own
  // constants of these names (server_lane.cc's kHelloTimeout) beside them.
  static constexpr std::chrono::seconds kHelloTimeout{5};          // a connected peer's first message
  static constexpr std::chrono::milliseconds kAnswerTimeout{100};  // a Welcome: small, into an empty socket buffer
  // An admitted worker connects to every lane within this, or is taken to have
  // stopped while it connected (said by report(); the job may end without it).
  static constexpr std::chrono::seconds kReachWindow{5};

  /// Answers a Hello received at `since` (`retried`: held before): admits the worker, refuses
  /// it, or holds it while its id's earlier connection may still be closing; never throws.
  void admit(std::unique_ptr<transport::Endpoint> ep, std::vector<uint8_t> message, Clock::time_point since,
             bool retried = false);
  /// Answers a Welcome that refuses, with its reason, and closes once the peer read it.
  void refuse_peer(std::unique_ptr<transport::Endpoint> ep, const std::string& why, uint32_t code);
  /// At the end of run(): refuses the Hellos waiting (read or held), saying the job is over or the server stopping.
  void refuse_latecomers(const ServerLane* failed);
  /// Refuses the Hello held for `worker`, if any: `newer` connected with that id since.
  void refuse_held(uint32_t worker, const std::string& newer);
  /// Keeps a Hello whose id is still connected, to be tried again; an older
  /// one held for that id is refused (its worker restarted once more).
  void hold(std::unique_ptr<transport::Endpoint> ep, std::vector<uint8_t> message, Clock::time_point since,
            uint32_t worker);
  /// Whether the worker of `hello`, connected by `ep`, pushes by active messages.
  static bool uses_am(const transport::Endpoint& ep, const Hello& hello);
  /// Whether puts to the worker on `ep` are emulated under `job` (they wait for its progress: it gets a copy).
  static bool puts_emulated(const transport::Endpoint& ep, const Config& job);
  /// Why this server has no memory for the worker of `hello` (MemoryBudget), or "";
  /// `bytes`: what admitting it takes (its inboxes and copies), `needs_copy`: on which lanes it has a copy.
  std::string no_memory_for(const transport::Endpoint& ep, const Hello& hello, uint64_t* bytes,
                            std::vector<bool>* needs_copy);
  /// Takes out of the memory budget the workers no lane holds any more, and
  /// counts as written the inboxes of those that pushed since admitted.
  void release_departed_budgets();
  /// `worker` gave up joining (JoiningWorkers) before it reached this server:
  /// its lanes count it lost, or, none started yet, the first lanes will.
  void forsake(uint32_t worker, uint64_t reconnect_ms);
  /// Pushes (pieces) of `worker` the lanes took, every connection of its id.
  uint64_t pushes_taken(uint32_t worker) const;
  /// Throws Error with the reason to refuse; fills and sends the Welcome otherwise.
  void admit_checked(transport::Endpoint& ep, const Hello& hello, Welcome& welcome);
  /// How this server's shards of `table` are split into lanes, and the
  /// memory they and each worker need against what is available; throws
  /// Error(kNoMemory) where not one worker fits.
  struct LanePlan {
    std::unique_ptr<Partition> partition;
    uint32_t shards = 0, lanes = 0;
    MemoryPlan memory;
    transport::AvailableMemory available;
  };
  LanePlan plan_lanes(const Config& config, const std::vector<TensorDecl>& table, const Checkpoint* checkpoint) const;
  /// A probe where no worker fixed the table yet: why its worker would be
  /// refused for memory as the first, or "" (every server of a job is asked
  /// before any admits it: one that admitted it and fixed its table, refused
  /// by another, left the job half-joined).
  std::string no_memory_for_first(const transport::Endpoint& ep, const Hello& hello) const;
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
  std::unique_ptr<transport::Context> context_;    // destroyed after the endpoints below
  std::unique_ptr<transport::Listener> listener_;  // closed when run() returns
  std::string address_;                            // where it listened
  const std::string tag_ = server_tag(options_);   // its log lines' start
  PendingPeers pending_{tag_, kHelloTimeout, kMaxHelloBytes};
  RefusalLog refusals_{tag_};  // a flood of bad Hellos must not flood the log
  std::unique_ptr<Partition> partition_;
  mutable std::mutex lanes_mu_;  // lanes_ is filled once, while stats() may read it
  std::vector<std::unique_ptr<ServerLane>> lanes_;
  std::vector<std::optional<Clock::time_point>> admitted_at_;  // by worker: its latest admission, if any
  Checkpointer checkpointer_{options_.config, options_.log_connections};
  bool resumed_ = false;
  uint64_t resumed_updates_ = 0;
  std::vector<uint64_t> restored_pushes_;  // by worker: its pushes the resumed checkpoint holds
  std::vector<uint64_t> resumed_clocks_;   // by worker: the clock the resumed checkpoint expects it back at, or 0
  std::vector<bool> awaited_;  // by worker: the clock holds until it connects (not one a checkpoint saw leave)
  std::vector<std::string> last_refusal_;         // by worker: why its last Hello was refused, until one is admitted
  uint64_t instance_ = 0;                         // random: this server process, as its workers know it
  Clock::time_point next_release_{};              // of release_departed_budgets() from the control loop
  bool planned_copies_ = false;                   // the memory plan counted a copy of the range per worker
  MemoryBudget memory_budget_;                    // what the workers were promised, against what the server had
  std::vector<uint64_t> taken_at_admission_;      // by worker: pushes_taken() as it was last admitted
  std::atomic<bool> said_unplanned_copy_{false};  // by this thread or a lane: once per server
  ClosingEndpoints closing_;                      // control connections, closed once the worker closed its side
  struct Held {
    std::unique_ptr<transport::Endpoint> ep;
    std::vector<uint8_t> message;
    Clock::time_point since;
    uint32_t worker;
  };
  // Hellos waiting for their id's earlier connection to be seen closed: at
  // most one per id, so that they are bounded by the job's size.
  std::vector<Held> held_;
  JoiningWorkers joining_;  // probes' connections, kept until their workers joined this server
  // By worker: forsake()'s window, until it is admitted again (the lanes that start next take it;
  // the "waiting for workers" line leaves it out).
  std::vector<std::optional<uint64_t>> forsaken_;
  Clock::time_point last_report_ = Clock::now(), last_waiting_ = Clock::now();
  ServerStats last_stats_;
  std::atomic<bool> stop_{false};
  std::mutex run_mu_;  // held by run(): the destructor waits for it
  bool ran_ = false;   // under run_mu_
  std::atomic<bool> final_checkpoint_failed_{false};
  transport::FileLimit file_limit_;
  int gpu_device_ = -1;  // --gpu-shard: the GPU current in the constructor, where every lane keeps its range
  std::string rule_;     // the lanes' update rule, under lanes_mu_
  std::unique_ptr<metrics::HttpEndpoint> metrics_;  // declared last: stopped before anything it reads goes
};

}  // namespace rdmaps::ps
