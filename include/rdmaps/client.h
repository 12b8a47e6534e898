// A worker's connection to the parameter servers: declare tensors, push
// gradients, pull parameters, advance the SSP clock.
#pragma once

// The first public header that needs C++20 (std::span); the others, included
// by the CUDA sources too, build as C++17.
#if __cplusplus < 202002L
#error "rdmaps' C++ headers need C++20 (std::span and more): compile with -std=c++20 or later"
#endif
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "rdmaps/config.h"

namespace rdmaps {

struct ClientOptions {
  std::vector<std::string> servers;  ///< host:port of every server, in server-index order
  uint32_t worker = 0;               ///< this worker's id, 0 .. workers-1 (refused by the constructor past it)
  /// How many workers the job has; the servers refuse this worker if theirs
  /// differs. 0: not checked.
  uint32_t workers = 0;
  Config config;
  /// Bound of every wait (connect, credits, clock, pull), at least 1 ms. A
  /// call whose wait failed takes up to one more for the sends it still had
  /// in flight, then fails (or reconnects: Config::reconnect_ms). Where a
  /// send is still under way then (a stopped server), the client takes no
  /// more calls, and that send reads the call's memory until the client is
  /// destroyed: destroy it before freeing that memory.
  std::chrono::milliseconds timeout{60000};
  /// HOST:PORT to serve GET /metrics on in the Prometheus text format
  /// (docs/observability.md); empty: off. A bad address or a port in use
  /// fails the constructor.
  std::string metrics;
};

struct ClientStats {
  uint64_t pushes = 0, push_bytes = 0;  ///< pushes: messages sent (small tensors gathered count once)
  uint64_t pulls = 0, pull_bytes = 0;
  uint64_t pulls_skipped = 0, pull_bytes_saved = 0;  ///< SSP with skip_pulls: cached copy was fresh enough
  uint64_t pull_bytes_in_place = 0;                  ///< landed straight in register_memory() memory
  uint64_t clocks = 0;
  double clock_wait_seconds = 0;
  double last_step_seconds = 0;         ///< between the two latest clock() calls: one iteration, its waits included
  std::vector<std::string> push_paths;  ///< per server: "put" or "am"
  std::string gpu_path = "none";        ///< last push from device memory: "direct" or "staged"
  /// Servers that restarted and were reconnected to (Config::reconnect_ms).
  uint64_t reconnects = 0;
  /// Pushes (pieces) those servers lost: sent after their last checkpoint, or not sent at all.
  uint64_t pushes_lost = 0;
  /// Servers that had resumed from a checkpoint when this worker first connected.
  uint32_t servers_resumed = 0;
  /// Servers that held a job's parameters when this worker first connected
  /// (resumed, or updated by other workers' pushes): a worker that sets
  /// initial values (init) would overwrite a model in training.
  uint32_t servers_holding = 0;
};

/// One tensor of a batched pull.
struct PullTarget {
  std::string name;
  std::span<float> out;
};

namespace ps {
class ClientImpl;
}

/// One worker. A client serves one thread at a time, in the process that
/// made it: a call while another thread's is in progress, or from a forked
/// child, is refused with Error(kInvalidArgument). interrupt() may come from
/// any thread.
class Client {
 public:
  explicit Client(const ClientOptions& options);
  /// Tells the servers this worker leaves and returns once each took in
  /// everything it sent (or ClientOptions::timeout, at most 5 s, passed). In a child forked after the client
  /// was made it does nothing: the connections are the parent's.
  ~Client();
  /// Neither copied nor moved: hold it by unique_ptr to pass it on.
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /// Declares a float32 tensor; all declarations come before connect().
  void declare(const std::string& name, size_t floats);
  /// Connects to every server and registers this worker's memory once. A
  /// server not listening yet, or one that closed the handshake unanswered
  /// (a listener full of pending handshakes), is tried again up to
  /// ClientOptions::timeout for each server (workers may start before their
  /// servers). Again after it succeeded: nothing to do, or
  /// Errc::kPeerGone where a server was lost since (it does not reconnect; Config::reconnect_ms does).
  void connect();

  /// Sets the servers' values of `name` (initial parameters; one worker does it).
  void init(const std::string& name, std::span<const float> values);
  /// Sends a gradient; returns once `gradient` may be reused (a small one is
  /// copied and goes with the adjoining ones, or at the next clock or pull:
  /// docs/protocol.md "Small tensors"). Host or CUDA
  /// device memory (ready: its stream synchronized); device data goes to UCX
  /// directly where UCX handles it, else through pinned buffers (stats().gpu_path).
  /// A worker's device tensors are on one GPU, which a push or pull of one
  /// makes the calling thread's current GPU (setting the previous one back
  /// would make a context on a GPU the thread never used).
  void push(const std::string& name, std::span<const float> gradient);
  /// Copies the parameters into `out` (host or device memory), fetched fresh
  /// (with Config::skip_pulls under SSP: only when the cached copy is staler
  /// than the bound allows, and always after barrier() or expire_cache()).
  /// A pull that throws may leave `out` part updated.
  void pull(const std::string& name, std::span<float> out);
  /// Pulls several tensors with one request per run of tensors adjoining in
  /// the table and server lane (a whole model after each step: one per lane);
  /// the staleness rule is pull()'s.
  void pull(std::span<const PullTarget> targets);
  /// The copy Config::skip_pulls serves pulls from expires: the next pull
  /// fetches (the final model, say, where no barrier() can be had).
  void expire_cache();
  /// Host memory that stays valid until this Client is destroyed (a model's
  /// parameters, say): pulls into it land in place where write-backs come by
  /// message (tcp) and where the servers put them and Config::put_landing
  /// allows, saving a copy per float (docs/protocol.md "Landing in place");
  /// after connect() it waits until every server thread took it. The promise
  /// is what makes it safe: a receive that a failed pull left posted there
  /// can still complete later. Memory the transport refuses (or a size past
  /// the address space) throws and is forgotten: the client goes on as before
  /// (before connect(), the transport takes it there: connect() throws, and
  /// the next connect() goes on without it).
  void register_memory(std::span<float> memory);
  /// Ends this iteration; blocks while the slowest live worker is more than
  /// `staleness` clocks behind. The iteration ends before the wait: a
  /// clock() that throws (a timeout waiting for a straggler) has already
  /// advanced clock_value() and told the servers, and a retry ends another
  /// iteration, whose wait is one clock further. One that throws while it
  /// sends the step's small pushes held back to go with their neighbours
  /// (a server gone) ends no iteration: compare clock_value() before a retry.
  /// Give ClientOptions::timeout the longest straggler wait you accept.
  void clock();

  /// Advances the clock and waits until every live worker reached it,
  /// whatever the staleness bound (e.g. after one worker's init()); the next
  /// pull fetches, and sees every push made before the barrier.
  void barrier();

  /// Later pushes carry this learning rate and the servers apply it instead of
  /// their configured one (a worker-side schedule); std::nullopt returns to
  /// theirs. At 0 a push changes no parameter but is still a step: momentum
  /// and the mean square take its gradient, as torch's SGD does at rate 0.
  /// Pushes made before keep the rate they were made at (small ones held back
  /// to go with their neighbours are sent first).
  void set_learning_rate(std::optional<float> lr);

  /// The one call for any thread: a call of this client in progress on its
  /// thread (waiting for a server: a clock, a pull, an inbox credit, a send
  /// in flight, a reconnect) ends soon with Error(kCancelled), and so does
  /// every later one but the local ones (stats(), clock_value(),
  /// messages_rejected(), metrics_address(), expire_cache()). Destroy the
  /// client once that call returned; the destructor still says goodbye.
  /// Where a send of that call is still under way (a stopped server), it
  /// reads the call's memory until the client is destroyed, as after a
  /// timeout: the error says so; destroy the client before freeing it.
  void interrupt();

  uint64_t clock_value() const;
  /// Like every call here, for the owning thread only (the metrics endpoint
  /// reads a copy that each call publishes).
  ClientStats stats() const;
  /// This worker's messages the servers rejected (a non-finite gradient
  /// under Config::check_nan, a malformed message; each is logged by its
  /// server): not applied, though the call that sent it returned. Counted
  /// as the servers report them back with their credits: after a pull, a
  /// push before it is.
  uint64_t messages_rejected() const;
  /// Where GET /metrics is served (the real port when asked for 0); "" when off.
  std::string metrics_address() const;

 private:
  std::unique_ptr<ps::ClientImpl> impl_;
};

}  // namespace rdmaps
