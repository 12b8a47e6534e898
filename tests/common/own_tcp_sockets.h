// The established tcp connections this process holds, as /proc/net/tcp and
// tcp6 show them: for tests that look at what the kernel does with them
// (keepalive timers, a connection accepted).
#pragma once

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace rdmaps::test {

struct OwnTcpSocket {
  int local_port = 0;
  std::string timer;        ///< "TT:JIFFIES" (TT 02: keepalive)
  uint64_t send_queue = 0;  ///< bytes sent and not yet acknowledged by the peer
};

/// Those of the process whose /proc directory is `proc` (another of this user's processes).
inline std::vector<OwnTcpSocket> established_tcp_sockets(const std::string& proc) {
  std::set<std::string> ours;
  for (const auto& e : std::filesystem::directory_iterator(proc + "/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    if (!ec && target.starts_with("socket:[")) ours.insert(target.substr(8, target.size() - 9));
  }
  std::vector<OwnTcpSocket> found;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // the column names
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, probes, inode;
      f >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> probes >> inode;
      const auto colon = local.rfind(':');
      if (state != "01" || colon == std::string::npos || !ours.count(inode)) continue;
      found.push_back({std::stoi(local.substr(colon + 1), nullptr, 16), timer,
                       std::stoull(queues.substr(0, queues.find(':')), nullptr, 16)});
    }
  }
  return found;
}

inline std::vector<OwnTcpSocket> own_established_tcp_sockets() { return established_tcp_sockets("/proc/self"); }

}  // namespace rdmaps::test
