// The job's rendezvous where the launcher offers no key-value service
// (torchrun-style launches, srun without PMIx): rank 0 hosts it at
// MASTER_ADDR:MASTER_PORT, each server registers its address there, and every
// rank asks until all servers are known (docs/cluster.md "Launchers").
// Requests and answers prove the job's secret (docs/security.md), so a peer
// without it learns nothing and registers nothing; whoever connects to a
// server still proves the secret again in the bootstrap handshake.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "src/launch/placement.h"
#include "transport/tcp_socket.h"

namespace rdmaps::launch {

/// The wildcard address of the family `host` resolves to, as a rank
/// connecting to host:port resolves it: "[::]:PORT" for IPv6 (MASTER_ADDR=::1,
/// an RDMAPS_SERVERS entry [fd00::5]:13337), else "0.0.0.0:PORT", also when
/// `host` is empty or does not resolve (the ranks that connect report that).
std::string wildcard_for(const std::string& host, uint16_t port);

/// "HOST:PORT" of p's rendezvous, an IPv6 address in brackets ("[::1]:29500").
std::string rendezvous_address(const Placement& p);

/// Answers the job's rendezvous at p.master_port on every address of the
/// family p.master_addr resolves to (IPv4 when empty), on a thread of its own,
/// until destroyed. With a `secret`, only requests that prove it are answered
/// beyond "not proven", and every answer proves it back; ranks of another
/// world size, server count or launch id (Placement::launch_id) are refused,
/// and so is a second process asking as a rank while the first still asks.
/// It never waits on a peer and holds at most one connection per rank plus
/// kMaxPending that have not yet proven anything, each for a few seconds.
class RendezvousHost {
 public:
  explicit RendezvousHost(const Placement& p, std::string secret = "");
  ~RendezvousHost();
  RendezvousHost(const RendezvousHost&) = delete;
  RendezvousHost& operator=(const RendezvousHost&) = delete;

  static constexpr size_t kMaxPending = 256;

 private:
  void serve();

  uint32_t world_size_, num_servers_;
  std::string launch_id_, secret_;
  std::string port_name_;  // the variable that moves this job's port (port_name())
  transport::TcpSocket listener_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// This process as the rendezvous knows it: "PID@HOST#RANDOM".
std::string this_process();

/// Registers `address` (a server's; empty for a worker) with the rendezvous
/// at p.master_addr:p.master_port and returns every server's address in
/// index order once every rank of the world has asked, asking again until
/// `timeout` ends. Requests prove `secret` (when not empty) and so must the
/// answers. Throws Error(kTimeout) naming the rendezvous, the ranks still
/// missing and why rank 0 refused them, or, when rank 0 answered and then
/// stopped (died, or was stopped), saying so; Error(kInvalidArgument) when
/// the rendezvous refuses (another world size or launch, another `process`
/// already asking as this rank, a server rank registered twice, another
/// secret or none) or p.master_addr does not resolve (naming its variable).
std::vector<std::string> rendezvous(const Placement& p, const std::string& address, std::chrono::milliseconds timeout,
                                    const std::string& secret = "", const std::string& process = this_process());

}  // namespace rdmaps::launch
