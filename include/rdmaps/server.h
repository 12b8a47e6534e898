// A parameter server process: serves one contiguous range of the parameter
// table to every worker (see docs/protocol.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "rdmaps/config.h"

namespace rdmaps {

/// Most workers one server serves (each holds an inbox and a DC backup there).
constexpr uint32_t kMaxWorkers = 4096;
/// Most servers one job has (a worker holds connections to each one's lanes).
constexpr uint32_t kMaxServers = 4096;

struct ServerOptions {
  std::string listen = "0.0.0.0:13337";  ///< host:port; port 0 picks a free one
  uint32_t index = 0;                    ///< this server's rank among `servers`
  uint32_t servers = 1;                  ///< at most kMaxServers
  uint32_t workers = 1;                  ///< workers the SSP clock waits for, connected or not; at most kMaxWorkers
  Config config;
  std::chrono::milliseconds stats_interval{0};  ///< periodic one-line stats, logged at info (rdmaps/log.h); 0 = off
  bool exit_when_done = true;                   ///< run() returns once every worker left
  bool log_connections = true;                  ///< a log line per worker joining or leaving (rdmaps/log.h)
  /// Take the update rule and its hyper-parameters from the first worker that
  /// connects (config's are ignored) and refuse workers whose rule differs.
  bool rule_from_workers = false;
  /// Keep this server's range, optimizer state and DC backups in GPU memory
  /// and apply updates with the fused CUDA kernel (needs a CUDA device).
  bool gpu_shard = false;
  /// Serve without a shared secret on an address other than loopback. Without
  /// it such a server refuses to start unless config.secret is set
  /// (docs/security.md).
  bool insecure = false;
  /// Largest parameter table (float32 bytes) a first worker may declare; 0:
  /// the machine's physical memory. A larger one is refused before anything is allocated.
  uint64_t max_bytes = 0;
  /// Log a live worker that holds the slowest clock without advancing it for
  /// this long (once per stall; others wait for it under SSP); 0: off.
  std::chrono::milliseconds stall_warning{0};
  /// HOST:PORT to serve GET /metrics on in the Prometheus text format
  /// (docs/observability.md); empty: off. A bad address or a port in use
  /// fails the constructor.
  std::string metrics;
};

/// Durations in power-of-two buckets: counts[k] holds those of at most 2^k
/// microseconds (k below the last), the last bucket the longer ones.
struct DurationHistogram {
  std::vector<uint64_t> counts;
  uint64_t sum_ns = 0;
};

struct ServerStats {
  uint64_t pushes = 0, bytes_in = 0, bytes_out = 0, pulls = 0, clocks = 0;
  uint64_t rejected = 0;  ///< malformed or out-of-order messages
  uint64_t dropped = 0;   ///< gradients dropped by the staleness policy
  uint64_t min_clock = 0;
  uint64_t workers_left = 0;                  ///< connections that ended with the worker's goodbye
  uint64_t workers_lost = 0;                  ///< connections that closed or failed without one
  std::vector<uint64_t> applied_per_worker;   ///< pushes applied, by worker id
  std::vector<uint64_t> rejected_per_worker;  ///< rejections, by worker id
  std::vector<uint64_t> bytes_in_per_worker;  ///< gradient bytes applied, by worker id
  std::vector<uint64_t> staleness;            ///< histogram of tau; last bucket counts tau >= size-1
  uint64_t staleness_sum = 0;                 ///< sum of tau over the applied pushes (exact, unlike the last bucket)
  uint64_t staleness_max = 0;                 ///< largest tau of an applied push (exact, unlike the last bucket)
  uint64_t max_clock = 0;                     ///< the fastest live worker's clock; max_clock - min_clock: SSP lag
  uint32_t workers_connected = 0;             ///< workers connected now
  /// Rejections by reason: "sequence", "header", "non-finite", "landing".
  std::vector<std::pair<std::string, uint64_t>> rejected_by_reason;
  DurationHistogram apply_latency;       ///< per piece: applying one update
  DurationHistogram write_back_latency;  ///< per piece: copying and putting fresh parameters for a pull
  std::string rule;                      ///< update rule the lanes apply ("" before the first worker)
  uint32_t lanes = 0;                    ///< server threads serving the data path (0 before the first worker)
  /// Longest a server thread spent admitting connections instead of serving
  /// its inboxes (handshakes never wait on a peer, so this stays small).
  uint64_t longest_setup_pause_us = 0;
  uint64_t stall_warnings = 0;       ///< workers logged for not advancing their clock (ServerOptions::stall_warning)
  uint64_t checkpoints = 0;          ///< checkpoints written (Config::checkpoint_dir)
  uint64_t checkpoint_failures = 0;  ///< checkpoints that could not be written (serving went on)
  uint64_t checkpoint_updates = 0;   ///< pushes held by the newest checkpoint written
  /// The checkpoint written as run() returned (the trained model) failed: it is not saved.
  bool final_checkpoint_failed = false;
  /// Pushes held by the checkpoint this server resumed from (Config::resume); 0: it started empty.
  uint64_t resumed_updates = 0;
  /// The q-quantile of tau; where it falls in the last bucket, that bucket's
  /// lower bound (size-1): the true value is at least that.
  double staleness_quantile(double q) const;
  /// The same as text: "7", or ">=4096" where it falls in the last bucket.
  std::string staleness_quantile_text(double q) const;
};

/// Threads (lanes) a server runs for `shards` shards of its range:
/// Config::server_threads, or else one per core the process may use (one
/// with a GPU shard), never more than one per shard.
uint32_t server_threads_for(const Config& config, uint64_t shards, bool gpu_shard);

namespace ps {
class ServerImpl;
}

class Server {
 public:
  explicit Server(const ServerOptions& options);
  /// Stops a run() in progress on another thread and waits for it to return.
  /// A run() must have begun before (as with any object, no call may start
  /// during or after the destructor). In a child forked after the server was
  /// made it does nothing (the server is the parent's); there run() throws
  /// Error(kInvalidArgument) and stop() does nothing.
  ~Server();
  /// Neither copied nor moved: hold it by unique_ptr to pass it on.
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// The bound listen address (the real port when asked for port 0).
  std::string address() const;
  /// Where GET /metrics is served (the real port when asked for 0); "" when off.
  std::string metrics_address() const;
  /// Serves until stop(), or until every worker left when exit_when_done.
  /// Once per Server, on one thread: a second call (while it runs, or after
  /// it returned) throws Error(kInvalidArgument). A server thread that fails
  /// (out of memory, a GPU error) stops the server: its workers are let go
  /// and run() throws its error, naming the thread. The listening port
  /// closes as it returns (address() still names it).
  void run();
  /// Thread-safe; run() returns soon after.
  void stop();
  /// Thread-safe snapshot; Error(kInvalidArgument) in a forked child (the parent's counters at the fork).
  ServerStats stats() const;

 private:
  std::unique_ptr<ps::ServerImpl> impl_;
};

}  // namespace rdmaps
