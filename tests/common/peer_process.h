// Multi-process tests: the test binary re-executes itself as a named peer
// (`--rdmaps-peer=NAME transport port seed [extra...]`), so every peer is a
// real process with its own UCX context.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "transport/context.h"

namespace rdmaps::test {

struct PeerArgs {
  transport::TransportKind transport;
  int port;
  uint64_t seed;
  std::vector<std::string> extra;
};
using PeerMain = std::function<int(const PeerArgs&)>;

/// This test run's shared secret (RDMAPS_SECRET; the test main draws a random
/// one when it is unset, and peer processes inherit it).
inline std::string test_secret() {
  const char* s = std::getenv("RDMAPS_SECRET");
  return s ? s : "";
}

/// Registers a peer entry point; use through RDMAPS_TEST_PEER.
bool register_peer(const std::string& name, PeerMain main);
/// Runs the peer named in argv if there is one; returns -1 if argv names none.
int run_peer_if_requested(int argc, char** argv);

/// A peer in its own process; killed on destruction if still running.
class PeerProcess {
 public:
  PeerProcess(const std::string& name, transport::TransportKind transport, int port, uint64_t seed,
              const std::vector<std::string>& extra = {});
  PeerProcess(PeerProcess&& other) noexcept : pid_(other.pid_), status_(other.status_) { other.pid_ = -1; }
  PeerProcess(const PeerProcess&) = delete;
  ~PeerProcess();
  /// Exit status, or -1 if it did not exit in time (then it is killed).
  int wait(std::chrono::milliseconds timeout);
  /// Never waits: false once it exited (wait() then returns its status at once).
  bool running();
  void kill_now();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int status_ = -1;  // exit status once reaped
};

/// A port on 127.0.0.1 that a peer process may listen on: free now, and
/// below the kernel's ephemeral range, so no outgoing connection (the test's
/// own, retrying while the peer starts) takes it as its source port first.
int free_listen_port();

/// A peer that listens on 127.0.0.1:*port, a free_listen_port() of its own:
/// another process may take a port between the probe and the peer's bind (a
/// server started beside a parallel test once failed so), so a peer that
/// exits before it listens is started again on another port. Returns once
/// it listens, or after 20 s with it still starting.
PeerProcess listening_peer(const std::string& name, transport::TransportKind transport, uint64_t seed,
                           const std::vector<std::string>& extra, int* port);

/// Whether every thread of `pid` is stopped (/proc/PID/task/*/stat state T).
bool is_stopped(pid_t pid);

/// Sends `pid` SIGSTOP and returns whether every thread of it stopped
/// (/proc/PID/task/*/stat state T) within 5 s: kill() returns before the
/// stop lands, and a thread still running meanwhile may take what the test
/// sends next. SIGCONT wakes it.
bool stop_process(pid_t pid);

/// Fresh random seed for this run (printed so a failure can be replayed).
uint64_t fresh_seed();
/// Deterministic bytes for (seed, stream): both peers derive the same data.
void fill_random(void* data, size_t length, uint64_t seed, uint64_t stream);

}  // namespace rdmaps::test

#define RDMAPS_TEST_PEER(name)                                    \
  static int rdmaps_peer_##name(const ::rdmaps::test::PeerArgs&); \
  [[maybe_unused]] static bool rdmaps_peer_registered_##name =    \
      ::rdmaps::test::register_peer(#name, &rdmaps_peer_##name);  \
  static int rdmaps_peer_##name(const ::rdmaps::test::PeerArgs& args)
