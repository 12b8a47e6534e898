#include "src/launch/rendezvous.h"

#include <poll.h>

#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "transport/address.h"

namespace rdmaps::launch {
namespace {

using transport::TcpSocket;
using Clock = std::chrono::steady_clock;

// Requests: "rdmaps-rendezvous 2 WORLD SERVERS RANK ADDRESS|- LAUNCH_ID"
// (the launch id is the rest of the line, perhaps empty). Answers:
// "ok A0,A1,...", "wait N missing R,R,..." or "error WHY".
constexpr const char* kTag = "rdmaps-rendezvous";
constexpr int kVersion = 2;
constexpr size_t kMaxRequest = 4096;  // an address is a host:port

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

std::string shown(const std::string& launch_id) { return launch_id.empty() ? "no launch id" : "'" + launch_id + "'"; }

struct Connection {
  TcpSocket socket;
  std::string peer;
  transport::MessageReader reader;
};

}  // namespace

std::string wildcard_for(const std::string& host, uint16_t port) {
  const std::string any = "0.0.0.0:" + std::to_string(port);
  if (host.empty()) return any;
  try {
    const auto a = transport::SockAddr::parse(transport::join_host_port(host, port));
    return a.get()->sa_family == AF_INET6 ? "[::]:" + std::to_string(port) : any;
  } catch (const Error&) {
    return any;
  }
}

std::string rendezvous_address(const Placement& p) { return transport::join_host_port(p.master_addr, p.master_port); }

RendezvousHost::RendezvousHost(uint16_t port, uint32_t world_size, uint32_t num_servers, const std::string& master_addr,
                               std::string launch_id)
    : world_size_(world_size), num_servers_(num_servers), launch_id_(std::move(launch_id)) {
  try {
    // The ranks connect to MASTER_ADDR as resolved: an IPv4 wildcard never
    // answers MASTER_ADDR=::1.
    listener_ = TcpSocket::listen(transport::SockAddr::parse(wildcard_for(master_addr, port)),
                                  "every rank dials MASTER_PORT: give them all the same free one");
  } catch (const Error& e) {
    throw Error(e.code(), "rank 0 cannot host the job's rendezvous (MASTER_PORT " + std::to_string(port) +
                              "): " + e.what() +
                              "; is another process of this job also rank 0, or another job on this host using "
                              "the same MASTER_PORT (an earlier one still running)?");
  }
  thread_ = std::thread([this] { serve(); });
}

RendezvousHost::~RendezvousHost() {
  stop_ = true;
  thread_.join();
}

void RendezvousHost::serve() {
  std::vector<std::string> addresses(num_servers_);
  std::vector<std::unique_ptr<Connection>> connections;
  auto answer = [&](const std::string& request) -> std::string {
    std::istringstream in(request);
    std::string tag, address;
    int version = 0;
    uint64_t world = 0, servers = 0, rank = 0;
    if (!(in >> tag >> version >> world >> servers >> rank) || tag != kTag) return "error not a rendezvous request";
    if (version != kVersion)
      return "error version " + std::to_string(version) + " (this host speaks " + std::to_string(kVersion) + ")";
    if (!(in >> address)) return "error not a rendezvous request";
    std::string launch;
    std::getline(in >> std::ws, launch);
    if (launch != launch_id_)
      return "error rank " + std::to_string(rank) + " is of another launch (" + shown(launch) + ") than rank 0 (" +
             shown(launch_id_) + "): two jobs share this MASTER_ADDR:MASTER_PORT; give each job its own MASTER_PORT";
    if (world != world_size_ || servers != num_servers_)
      return "error rank " + std::to_string(rank) + " was started with world size " + std::to_string(world) + " and " +
             std::to_string(servers) + " server(s), rank 0 with " + std::to_string(world_size_) + " and " +
             std::to_string(num_servers_) + ": one job, one launch";
    if (rank >= world) return "error rank " + std::to_string(rank) + " is not below the world size";
    if (address != "-") {
      if (rank >= num_servers_)
        return "error rank " + std::to_string(rank) + " registers an address but only ranks below " +
               std::to_string(num_servers_) + " serve";
      std::string& slot = addresses[rank];
      if (!slot.empty() && slot != address)
        return "error server rank " + std::to_string(rank) + " registered twice (" + slot + " and " + address +
               "): two processes believe they are rank " + std::to_string(rank) +
               "; do launcher variables disagree (a RANK exported by hand)?";
      slot = address;
    }
    std::string missing;
    for (uint32_t i = 0; i < num_servers_; ++i)
      if (addresses[i].empty()) missing += (missing.empty() ? "" : ",") + std::to_string(i);
    if (!missing.empty()) return "wait missing " + missing;
    std::string all = "ok ";
    for (uint32_t i = 0; i < num_servers_; ++i) all += (i ? "," : "") + addresses[i];
    return all;
  };

  Clock::time_point last_warned{};
  while (!stop_) {
    std::vector<pollfd> fds{{listener_.fd(), POLLIN, 0}};
    for (auto& c : connections) fds.push_back({c->socket.fd(), POLLIN, 0});
    ::poll(fds.data(), fds.size(), 100);
    transport::SockAddr peer;
    try {
      while (true) {
        TcpSocket s = listener_.try_accept(&peer);
        if (!s.valid()) break;
        connections.push_back(std::make_unique<Connection>(Connection{std::move(s), peer.to_string(), {}}));
      }
    } catch (const Error& e) {
      // Out of files, most likely (ranks of a large launch at once): the
      // connection waits in the backlog until an answered rank's closes. The
      // listener stays readable meanwhile, so pause instead of spinning.
      if (const auto now = Clock::now(); now - last_warned >= std::chrono::seconds(1)) {
        last_warned = now;
        log(LogLevel::kWarn, std::string("rendezvous: ") + e.what() + "; retrying");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (size_t i = 0; i < connections.size();) {
      Connection& c = *connections[i];
      bool keep = true;
      try {
        if (c.reader.poll(c.socket, c.peer, kMaxRequest)) {
          auto request = c.reader.take();
          c.socket.send_message(bytes_of(answer(std::string(request.begin(), request.end()))),
                                Clock::now() + std::chrono::seconds(5), c.peer);
        }
      } catch (const Error&) {
        keep = false;  // gone, or sent something no rank sends: its own rank reports its failure
      }
      if (keep) {
        ++i;
      } else {
        connections.erase(connections.begin() + static_cast<std::ptrdiff_t>(i));
      }
    }
  }
}

std::vector<std::string> rendezvous(const Placement& p, const std::string& address, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string where = rendezvous_address(p);
  const std::string seconds = std::to_string(timeout.count() / 1000.0).substr(0, 5) + " s";
  const std::string request = std::string(kTag) + " " + std::to_string(kVersion) + " " + std::to_string(p.world_size) +
                              " " + std::to_string(p.num_servers) + " " + std::to_string(p.rank) + " " +
                              (address.empty() ? "-" : address) + " " + p.launch_id;

  transport::SockAddr addr;
  try {
    addr = transport::SockAddr::parse(where);
  } catch (const Error& e) {
    throw Error(Errc::kInvalidArgument,
                p.master_addr_var + "=" + p.master_addr +
                    " (rank 0's host, where the job's rendezvous is) does not resolve: " + e.what());
  }
  std::string last_error, last_answer;
  // Which came last: rank 0 answering, or failing to. Rank 0 that answered
  // and then stopped (it died) is what to report, not its last answer.
  bool error_after_answer = false;
  bool reached = false;  // something accepted the connection
  while (Clock::now() < deadline) {
    try {
      TcpSocket s = TcpSocket::connect(addr, std::min(deadline, Clock::now() + std::chrono::seconds(5)));
      reached = true;
      while (Clock::now() < deadline) {
        s.send_message(bytes_of(request), deadline, where);
        auto reply = s.recv_message(deadline, where, 1 << 20);
        last_answer.assign(reply.begin(), reply.end());
        error_after_answer = false;
        if (last_answer.rfind("ok ", 0) == 0) {
          std::vector<std::string> servers;
          std::istringstream list(last_answer.substr(3));
          for (std::string item; std::getline(list, item, ',');) servers.push_back(item);
          if (servers.size() != p.num_servers)
            throw Error(Errc::kProtocol, "the rendezvous at " + where + " answered " + std::to_string(servers.size()) +
                                             " server addresses for " + std::to_string(p.num_servers) + " servers");
          return servers;
        }
        if (last_answer.rfind("error ", 0) == 0)
          throw Error(Errc::kInvalidArgument, "the rendezvous at " + where + " refused rank " + std::to_string(p.rank) +
                                                  ": " + last_answer.substr(6));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    } catch (const Error& e) {
      if (e.code() == Errc::kInvalidArgument || e.code() == Errc::kProtocol) throw;
      last_error = e.what();  // rank 0 not up yet, or it restarted: ask again
      // (not an answer cut short by the deadline itself)
      if (e.code() != Errc::kTimeout || Clock::now() < deadline) error_after_answer = !last_answer.empty();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  const std::string missing = last_answer.rfind("wait missing ", 0) == 0 ? last_answer.substr(13) : std::string();
  if (error_after_answer)
    throw Error(Errc::kTimeout, "rank " + std::to_string(p.rank) + ": rank 0, which hosts the rendezvous at " + where +
                                    " (MASTER_ADDR:MASTER_PORT), stopped answering" +
                                    (missing.empty() ? "" : " while server rank(s) " + missing + " were missing") +
                                    ", and did not answer again within " + seconds + ": " + last_error +
                                    " (did rank 0 exit? its own error says why)");
  if (!missing.empty())
    throw Error(Errc::kTimeout, "rank " + std::to_string(p.rank) + ": the rendezvous at " + where +
                                    " still lacks server rank(s) " + missing + " after " + seconds +
                                    ": did every rank start, with the same --servers?");
  if (reached && last_answer.empty())
    throw Error(Errc::kTimeout, "rank " + std::to_string(p.rank) + ": something at " + where +
                                    " (MASTER_ADDR:MASTER_PORT) accepted the connection but never answered as rdmaps' "
                                    "rendezvous within " +
                                    seconds + ": " + last_error +
                                    " (another program on that port? then rank 0 could not host it and its own "
                                    "error says so; give the job another MASTER_PORT)");
  throw Error(Errc::kTimeout, "rank " + std::to_string(p.rank) + " could not reach the rendezvous at " + where +
                                  " (MASTER_ADDR:MASTER_PORT; rank 0 hosts it) within " + seconds + ": " +
                                  (last_error.empty() ? "no answer" : last_error));
}

}  // namespace rdmaps::launch
