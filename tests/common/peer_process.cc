#include "tests/common/peer_process.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include "transport/tcp_socket.h"

extern char** environ;

namespace rdmaps::test {

namespace {
std::map<std::string, PeerMain>& registry() {
  static std::map<std::string, PeerMain> peers;
  return peers;
}
constexpr const char* kFlag = "--rdmaps-peer=";
}  // namespace

bool register_peer(const std::string& name, PeerMain main) {
  // Two files' peers of one name: one silently ran as the other (with the
  // other's arguments), and the tests of that file failed far from the cause.
  if (!registry().emplace(name, std::move(main)).second) {
    std::fprintf(stderr, "peer '%s' is defined twice (RDMAPS_TEST_PEER): give one another name\n", name.c_str());
    std::abort();
  }
  return true;
}

int run_peer_if_requested(int argc, char** argv) {
  if (argc < 5 || std::strncmp(argv[1], kFlag, std::strlen(kFlag)) != 0) return -1;
  std::string name = argv[1] + std::strlen(kFlag);
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::fprintf(stderr, "peer: no peer named '%s'\n", name.c_str());
    return 2;
  }
  PeerArgs args{transport::parse_transport(argv[2]), std::atoi(argv[3]), std::stoull(argv[4]), {}};
  for (int i = 5; i < argc; ++i) args.extra.emplace_back(argv[i]);
  try {
    return it->second(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "peer %s failed: %s\n", name.c_str(), e.what());
    return 3;
  }
}

PeerProcess::PeerProcess(const std::string& name, transport::TransportKind transport, int port, uint64_t seed,
                         const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"/proc/self/exe", kFlag + name, transport::transport_name(transport),
                                   std::to_string(port), std::to_string(seed)};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) throw std::runtime_error("readlink /proc/self/exe failed");
  exe[n] = '\0';
  int rc = posix_spawn(&pid_, exe, nullptr, nullptr, argv.data(), environ);
  if (rc != 0) throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(rc));
}

PeerProcess::~PeerProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

void PeerProcess::kill_now() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
}

bool PeerProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) != pid_) return true;
  pid_ = -1;
  status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return false;
}

int PeerProcess::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill_now();
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return status_;
}

int free_listen_port() {
  int low = 32768, high = 60999;  // Linux's default ip_local_port_range
  if (std::FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
    if (std::fscanf(f, "%d %d", &low, &high) != 2) low = 32768, high = 60999;
    std::fclose(f);
  }
  const auto [first, last] = low > 11000 ? std::pair{10000, low - 1} : std::pair{high + 1, 65535};
  std::mt19937 rng(std::random_device{}());
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const int port = std::uniform_int_distribution<int>(first, last)(rng);
    try {
      transport::TcpSocket::listen(transport::SockAddr::parse("127.0.0.1:" + std::to_string(port)));
      return port;
    } catch (const std::exception&) {  // in use: another
    }
  }
  throw std::runtime_error("free_listen_port: no free port in [" + std::to_string(first) + ", " + std::to_string(last) +
                           "]");
}

namespace {
// Whether process `pid` holds a socket listening on `port` (/proc: its fds'
// socket inodes against the kernel's table of TCP sockets).
bool listens_on(pid_t pid, int port) {
  std::set<std::string> inodes;
  std::error_code ec;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    const std::string target = std::filesystem::read_symlink(fd.path(), ec).string();
    if (!ec && target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      const auto colon = local.rfind(':');
      if (state == "0A" && colon != std::string::npos && std::stoi(local.substr(colon + 1), nullptr, 16) == port &&
          inodes.count(inode))
        return true;
    }
  }
  return false;
}
}  // namespace

PeerProcess listening_peer(const std::string& name, transport::TransportKind transport, uint64_t seed,
                           const std::vector<std::string>& extra, int* port) {
  for (int attempt = 0;; ++attempt) {
    *port = free_listen_port();
    PeerProcess peer(name, transport, *port, seed, extra);
    for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
         std::chrono::steady_clock::now() < until;) {
      if (!peer.running()) break;
      if (listens_on(peer.pid(), *port)) return peer;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (peer.running() || attempt == 4) return peer;  // still starting, or failing for a reason of its own
    std::fprintf(stderr, "[ retry    ] peer %s exited before it listened on port %d; another port\n", name.c_str(),
                 *port);
  }
}

uint64_t fresh_seed() {
  uint64_t seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  std::printf("[ seed     ] %llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

void fill_random(void* data, size_t length, uint64_t seed, uint64_t stream) {
  std::mt19937_64 rng(seed ^ (stream * 0x9E3779B97F4A7C15ull));
  auto* p = static_cast<uint8_t*>(data);
  size_t i = 0;
  for (; i + 8 <= length; i += 8) {
    uint64_t v = rng();
    std::memcpy(p + i, &v, 8);
  }
  if (i < length) {
    uint64_t v = rng();
    std::memcpy(p + i, &v, length - i);
  }
}

bool is_stopped(pid_t pid) {
  bool all = true;
  std::error_code ec;
  // increment(ec), not ++: a task directory read while the process goes throws otherwise.
  for (std::filesystem::directory_iterator t("/proc/" + std::to_string(pid) + "/task", ec), end; !ec && t != end;
       t.increment(ec)) {
    std::ifstream stat(t->path() / "stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    if (close == std::string::npos || close + 2 >= text.size() || text[close + 2] != 'T') all = false;
  }
  return !ec && all;
}

bool stop_process(pid_t pid) {
  if (::kill(pid, SIGSTOP) != 0) return false;
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
       std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(std::chrono::milliseconds(1)))
    if (is_stopped(pid)) return true;
  return false;
}

}  // namespace rdmaps::test
