#include "src/launch/server_directory.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "src/launch/pmix_exchange.h"
#include "src/launch/rendezvous.h"
#include "src/launch/server_list.h"
#include "transport/address.h"
#include "transport/unique_fd.h"

namespace rdmaps::launch {
namespace {

std::string port_of(const std::string& host_port) { return host_port.substr(host_port.rfind(':') + 1); }

using transport::host_of;

// "[v6]" without its brackets; anything else as it is.
std::string unbracketed(std::string host) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return host;
}

// The source address the kernel would use toward `host`: connecting a UDP
// socket sends nothing.
std::string route_toward(const std::string& host, uint16_t port) {
  try {
    const auto to = transport::SockAddr::parse(transport::join_host_port(host, port));
    const transport::UniqueFd fd(::socket(to.get()->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return "";
    sockaddr_storage local{};
    socklen_t length = sizeof(local);
    if (::connect(fd.get(), to.get(), to.length()) != 0 ||
        ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &length) != 0)
      return "";
    std::string text = transport::SockAddr::from(reinterpret_cast<sockaddr*>(&local), length).to_string();
    return host_of(text);
  } catch (const Error&) {
    return "";
  }
}

std::string first_interface_address() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "";
  std::string found;
  for (ifaddrs* i = list; i && found.empty(); i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    if (!(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK)) continue;
    // Link-local (169.254/16): another host reaches it only on the same link, if at all.
    if ((ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr) >> 16) == 0xA9FE) continue;
    char text[INET_ADDRSTRLEN] = {};
    if (::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof(text))) found = text;
  }
  ::freeifaddrs(list);
  return found;
}

// An IPv6 address written out (a scoped one, fe80::1%eth0, too); a host name
// is not looked up.
bool ipv6_literal(const std::string& host) {
  in6_addr v6{};
  return ::inet_pton(AF_INET6, host.substr(0, host.find('%')).c_str(), &v6) == 1;
}

bool is_loopback(const std::string& host) {
  in_addr v4{};
  in6_addr v6{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  return ::inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

// Whether `host` is an address of this machine: binding to it succeeds only
// then. A name that does not resolve counts as local here; the connect names it.
bool names_this_host(const std::string& host) {
  try {
    const auto at = transport::SockAddr::parse(transport::join_host_port(host, 0));
    const transport::UniqueFd fd(::socket(at.get()->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    return !fd.valid() || ::bind(fd.get(), at.get(), at.length()) == 0 || errno != EADDRNOTAVAIL;
  } catch (const Error&) {
    return true;
  }
}

}  // namespace

ServerDirectory::ServerDirectory(const Placement& p, std::chrono::milliseconds timeout, std::string secret,
                                 const Environment& env)
    : p_(p), timeout_(timeout), secret_(std::move(secret)) {
  if (auto a = env("RDMAPS_ADVERTISE_ADDR")) advertise_ = unbracketed(*a);
  if (!p.servers.empty()) {
    method_ = Method::kList;
    // Workers look for this server at its entry: a launcher that placed the
    // ranks otherwise sends them to another host. A warning, not a refusal:
    // a NAT or a container may publish the entry elsewhere.
    if (p.is_server()) {
      const std::string& entry = p.servers[p.server_index()];
      if (!names_this_host(host_of(entry)))
        logf(LogLevel::kWarn,
             "rdmaps: warning: %s serves RDMAPS_SERVERS entry %u '%s', but '%s' is not an address of this host: "
             "its workers connect there (did the launcher place the ranks otherwise than the list?)",
             p.describe().c_str(), p.server_index() + 1, entry.c_str(), host_of(entry).c_str());
    }
  } else if (p.pmix && have_pmix()) {
    method_ = Method::kPmix;
  } else {
    method_ = Method::kRendezvous;
    // torchrun's agent already serves its own store on MASTER_PORT.
    if (env("TORCHELASTIC_USE_AGENT_STORE") == std::optional<std::string>("True") &&
        p.master_port_var != "RDMAPS_MASTER_PORT")
      throw Error(Errc::kInvalidArgument,
                  "under torchrun the agent's store holds MASTER_PORT " + std::to_string(p.master_port) +
                      ": set RDMAPS_MASTER_PORT to another free port on rank 0's host for rdmaps' rendezvous");
    // Every rank looks for the rendezvous at that address: rank 0 elsewhere
    // (srun's launch node, a layout that put task 0 on another node) would
    // leave them all waiting out their timeout.
    // Refused where Slurm's variables chose it; a MASTER_ADDR given by hand
    // may be published here by a NAT or a virtual IP: warned of.
    if (p.rank == 0 && !names_this_host(p.master_addr)) {
      const std::string why = "rank 0 hosts the job's rendezvous where every rank looks for it, " + p.master_addr_var +
                              " (" + p.master_addr + "), but that is not an address of this host";
      if (p.master_addr_var.rfind("SLURM_", 0) == 0) {
        // A heterogeneous step's node list is its components' lists joined and sorted.
        const auto het = env("SLURM_HET_SIZE");
        throw Error(Errc::kInvalidArgument,
                    why + ": set MASTER_ADDR to rank 0's host (or RDMAPS_SERVERS)" +
                        (het && *het != "1"
                             ? "; in a heterogeneous step (SLURM_HET_SIZE=" + *het +
                                   ") SLURM_STEP_NODELIST is its components' lists joined and sorted, so its first "
                                   "host need not be task 0's: MASTER_ADDR=$(scontrol show hostnames "
                                   "\"$SLURM_JOB_NODELIST_HET_GROUP_0\" | head -n 1)"
                             : ""));
      }
      logf(LogLevel::kWarn, "rdmaps: warning: %s (a NAT or a virtual IP that forwards here?)", why.c_str());
    }
    if (p.rank == 0) host_ = std::make_unique<RendezvousHost>(p, secret_);
  }
}

ServerDirectory::~ServerDirectory() = default;

// The wildcard of the family the workers will use: that of this server's
// RDMAPS_SERVERS entry, of the address it is told to advertise
// (RDMAPS_ADVERTISE_ADDR: an IPv6 one was advertised while the server listened
// on IPv4 alone, and every worker was refused), or of the rendezvous host,
// toward which the address it advertises is routed (an IPv4 wildcard refuses
// [::1]:PORT). The IPv6 wildcard takes IPv4 too.
std::string ServerDirectory::listen_address() const {
  if (method_ == Method::kList && p_.is_server()) {
    const std::string& entry = p_.servers[p_.server_index()];
    return wildcard_for(host_of(entry), static_cast<uint16_t>(std::stoul(port_of(entry))));
  }
  if (ipv6_literal(advertise_)) return "[::]:0";
  if (method_ == Method::kRendezvous) {
    // Every rank on this host (a loopback MASTER_ADDR) and no address
    // advertised: served on loopback alone, as the rendezvous is, and UCX
    // stays there too (ContextOptions::loopback_only). The wildcard offered
    // the model's ports, and UCX's tcp ones that take writes without the
    // handshake, on every interface of a one-machine job.
    if (advertise_.empty() && p_.every_rank_is_local())
      return ipv6_literal(unbracketed(p_.master_addr)) ? "[::1]:0" : "127.0.0.1:0";
    return wildcard_for(p_.master_addr, 0);
  }
  return "0.0.0.0:0";
}

void ServerDirectory::check_listen(const std::string& listen, const std::string& flag) const {
  if (method_ != Method::kList || !p_.is_server()) return;
  const std::string& entry = p_.servers[p_.server_index()];
  const std::string port = port_of(listen);
  const bool same = listen.find(':') != std::string::npos && !port.empty() && port.size() <= 5 &&
                    port.find_first_not_of("0123456789") == std::string::npos &&
                    std::stoul(port) == std::stoul(port_of(entry));
  if (!same)
    throw Error(Errc::kInvalidArgument, flag + " " + listen +
                                            " listens on another port than this server's RDMAPS_SERVERS entry " +
                                            std::to_string(p_.server_index() + 1) + " '" + entry +
                                            "', where the workers connect: give it port " + port_of(entry) +
                                            ", or leave " + flag + " out (the entry's port, on every address)");
}

std::vector<std::string> ServerDirectory::exchange(const std::string& address) {
  std::vector<std::string> servers;
  switch (method_) {
    case Method::kList:
      return p_.servers;  // checked by detect()
    case Method::kPmix:
      servers = pmix_exchange(p_, address, timeout_);
      break;
    case Method::kRendezvous:
      servers = rendezvous(p_, address, timeout_, secret_);
      break;
  }
  // What other ranks registered, checked as a list typed by hand is, naming
  // where it came from (a worker's error named --servers-list, which nobody gave).
  check_server_list(servers, "the servers' addresses through " + method());
  return servers;
}

std::string ServerDirectory::method() const {
  switch (method_) {
    case Method::kList:
      return "RDMAPS_SERVERS";
    case Method::kPmix:
      return "PMIx";
    case Method::kRendezvous:
      return "the rendezvous at " + rendezvous_address(p_);
  }
  return "";
}

std::string advertised_address(const Placement& p, const std::string& bound, const Environment& env) {
  // The bound address's port, joined to the host advertised (an IPv6 one in brackets).
  const auto port = static_cast<uint16_t>(std::stoul(port_of(bound)));
  auto with_port = [port](const std::string& host) { return transport::join_host_port(host, port); };
  if (auto a = env("RDMAPS_ADVERTISE_ADDR"); a && !a->empty()) {
    // A host alone: the port is the one bound. "node1:5000" became "[node1:5000]:4000".
    const std::string host = unbracketed(*a);
    const bool ipv6 = ipv6_literal(host);
    // A comma would split the job's list of servers (the rendezvous answers them comma-separated).
    if (host.find_first_of(" \t\r\n[],") != std::string::npos || (!ipv6 && host.find(':') != std::string::npos))
      throw Error(Errc::kInvalidArgument, "RDMAPS_ADVERTISE_ADDR='" + *a +
                                              "' is not a host name or address: give the host alone (this "
                                              "server's port, " +
                                              std::to_string(port) + ", is added)");
    return with_port(host);
  }
  std::string host = host_of(bound);
  if (host != "0.0.0.0" && host != "::" && !host.empty()) return bound;
  if (!p.master_addr.empty()) host = route_toward(p.master_addr, p.master_port);
  // Rank 0's route to itself is loopback: no address for ranks elsewhere.
  if (is_loopback(host) && !p.every_rank_is_local()) host = "";
  if (host.empty() || host == "0.0.0.0") host = first_interface_address();
  if (host.empty()) host = "127.0.0.1";
  return with_port(host);
}

}  // namespace rdmaps::launch
