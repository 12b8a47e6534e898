// How the ranks of a launched job learn the servers' addresses: the list in
// RDMAPS_SERVERS, the launcher's PMIx store, or the rendezvous rank 0 hosts
// at MASTER_ADDR:MASTER_PORT, in that order (docs/cluster.md "Launchers").
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "src/launch/placement.h"

namespace rdmaps::launch {

class RendezvousHost;

class ServerDirectory {
 public:
  /// Rank 0 starts hosting the rendezvous here when the job uses one, so it
  /// is up before anybody asks. Every wait is bounded by `timeout`; the
  /// rendezvous proves `secret` (the job's, empty for none) both ways.
  ServerDirectory(const Placement& p, std::chrono::milliseconds timeout, std::string secret,
                  const Environment& env = process_environment());
  ~ServerDirectory();
  ServerDirectory(const ServerDirectory&) = delete;
  ServerDirectory& operator=(const ServerDirectory&) = delete;

  /// Where a server of this job listens: the port RDMAPS_SERVERS gives it,
  /// else any free one, on every address of the family the workers use (that
  /// of its RDMAPS_SERVERS entry or of MASTER_ADDR: "[::]:PORT" for IPv6).
  std::string listen_address() const;
  /// A listen address given by hand (`flag`: --listen) must keep the port of
  /// this server's RDMAPS_SERVERS entry, where workers connect; throws
  /// Error(kInvalidArgument) naming both. Other methods advertise what is
  /// bound, so anything goes there.
  void check_listen(const std::string& listen, const std::string& flag) const;
  /// Servers pass the address the others reach them at, workers "". Returns
  /// every server's address in index order; throws Error naming the method
  /// and what did not answer.
  std::vector<std::string> exchange(const std::string& address);
  /// "RDMAPS_SERVERS", "PMIx" or "the rendezvous at HOST:PORT".
  std::string method() const;

 private:
  enum class Method { kList, kPmix, kRendezvous };
  Placement p_;
  std::chrono::milliseconds timeout_;
  std::string secret_;
  Method method_;
  std::string advertise_;  // RDMAPS_ADVERTISE_ADDR, if given: its family is the one to listen on
  std::unique_ptr<RendezvousHost> host_;
};

/// The address others reach a server at that is bound to `bound`
/// (host:port): RDMAPS_ADVERTISE_ADDR, else the bound host unless it is a
/// wildcard, else the local end of the route to the rendezvous host (unless
/// that is loopback and MASTER_ADDR is not: a name of this host that it maps
/// to 127.0.1.1), else the first IPv4 interface that is up and neither
/// loopback nor link-local, else 127.0.0.1. Throws Error(kInvalidArgument)
/// when RDMAPS_ADVERTISE_ADDR is not a host alone (a port, blanks, brackets).
std::string advertised_address(const Placement& p, const std::string& bound,
                               const Environment& env = process_environment());

}  // namespace rdmaps::launch
