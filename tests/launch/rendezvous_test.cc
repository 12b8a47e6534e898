// The rendezvous rank 0 hosts for launches without PMIx: real sockets, ranks
// as threads of this process.
#include "src/launch/rendezvous.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <map>
#include <thread>

#include "rdmaps/error.h"
#include "src/launch/server_directory.h"
#include "tests/common/free_port.h"
#include "tests/common/output_capture.h"
#include "tests/common/scoped_file_limit.h"
#include "tests/launch/local_placement.h"
#include "transport/address.h"
#include "transport/tcp_socket.h"

namespace rdmaps::launch {
namespace {

using test::free_port;

using namespace std::chrono_literals;

Placement rank_of(uint32_t rank, uint32_t world, uint32_t servers, uint16_t port) {
  return test::local_rank(rank, world, servers, port);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return std::string(errc_name(e.code())) + ": " + e.what();
  }
  return "no error";
}

// The worker ranks a test does not play, asking as real ranks do: rank 0
// answers nobody "ok" before every rank of the world asked.
class OtherWorkers {
 public:
  OtherWorkers(Placement p, std::initializer_list<uint32_t> ranks, std::string secret = "") {
    for (const uint32_t r : ranks) {
      p.rank = r;
      asking_.push_back(std::async(std::launch::async, [=] { return rendezvous(p, "", 10s, secret); }));
    }
  }
  // What every one of them learned.
  std::vector<std::vector<std::string>> answers() {
    std::vector<std::vector<std::string>> all;
    for (auto& a : asking_) all.push_back(a.get());
    return all;
  }
  ~OtherWorkers() {
    for (auto& a : asking_)
      if (a.valid()) a.wait();
  }

 private:
  std::vector<std::future<std::vector<std::string>>> asking_;
};

TEST(Rendezvous, EveryRankLearnsEveryServerInIndexOrder) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 5, 2, port));
  std::vector<std::future<std::vector<std::string>>> ranks;
  // Workers ask before the servers registered: they wait for them.
  for (uint32_t r : {4u, 2u, 3u})
    ranks.push_back(std::async(std::launch::async, [=] { return rendezvous(rank_of(r, 5, 2, port), "", 10s); }));
  std::this_thread::sleep_for(200ms);
  ranks.push_back(
      std::async(std::launch::async, [=] { return rendezvous(rank_of(1, 5, 2, port), "10.0.0.2:4001", 10s); }));
  ranks.push_back(
      std::async(std::launch::async, [=] { return rendezvous(rank_of(0, 5, 2, port), "10.0.0.1:4000", 10s); }));
  for (auto& r : ranks) EXPECT_EQ(r.get(), (std::vector<std::string>{"10.0.0.1:4000", "10.0.0.2:4001"}));
}

TEST(Rendezvous, RanksThatStartBeforeRankZeroWaitForIt) {
  const uint16_t port = free_port();
  auto worker = std::async(std::launch::async, [=] { return rendezvous(rank_of(1, 2, 1, port), "", 10s); });
  std::this_thread::sleep_for(500ms);
  RendezvousHost host(rank_of(0, 2, 1, port));
  EXPECT_EQ(rendezvous(rank_of(0, 2, 1, port), "127.0.0.1:5000", 10s), std::vector<std::string>{"127.0.0.1:5000"});
  EXPECT_EQ(worker.get(), std::vector<std::string>{"127.0.0.1:5000"});
}

TEST(Rendezvous, TimeoutNamesTheServersThatNeverCame) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 4, 3, port));
  auto s0 = std::async(std::launch::async, [=] { return rendezvous(rank_of(0, 4, 3, port), "h:1", 2s); });
  const std::string what = error_of([&] { rendezvous(rank_of(3, 4, 3, port), "", 1s); });
  EXPECT_NE(what.find("timeout"), std::string::npos) << what;
  EXPECT_NE(what.find("still lacks rank(s) 1-2 (ranks below 3 serve)"), std::string::npos) << what;
  EXPECT_THROW(s0.get(), Error);
}

// Servers were answered once every server registered: a worker refused by the
// rendezvous (another WORLD_SIZE), or one that never started, left them
// waiting for it for good, and nobody said why. Now nobody is answered
// before every rank came, and the refusal is quoted to the others.
TEST(Rendezvous, NoRankIsAnsweredBeforeEveryRankCameAndARefusalIsQuoted) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 3, 1, port));
  auto server =
      std::async(std::launch::async, [=] { return error_of([&] { rendezvous(rank_of(0, 3, 1, port), "h:1", 2s); }); });
  const std::string refused = error_of([&] { rendezvous(rank_of(2, 4, 1, port), "", 2s); });
  EXPECT_NE(refused.find("was started with world size 4"), std::string::npos) << refused;
  const std::string what = error_of([&] { rendezvous(rank_of(1, 3, 1, port), "", 1s); });
  EXPECT_NE(what.find("timeout: rank 1: the rendezvous at 127.0.0.1:" + std::to_string(port) +
                      " still lacks rank(s) 2 (ranks below 1 serve)"),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("and --servers? rank 2 was refused by rank 0 (from 127.0.0.1:"), std::string::npos) << what;
  EXPECT_NE(what.find("): rank 2 was started with world size 4 and 1 server(s), rank 0 with 3 and 1"),
            std::string::npos)
      << what;
  const std::string server_saw = server.get();
  EXPECT_NE(server_saw.find("still lacks rank(s) 1-2"), std::string::npos) << server_saw;
}

// Nobody is answered before every rank came: a worker that reached its init
// late (a Python script importing torch and loading data first) must not end
// a server whose timeout is shorter. Past it, with only workers missing and
// none refused, the ranks wait on, up to ten minutes.
TEST(Rendezvous, AWorkerLaterThanTheTimeoutIsWaitedForWhenNoneWasRefused) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 3, 1, port));
  auto server = std::async(std::launch::async, [=] { return rendezvous(rank_of(0, 3, 1, port), "h:1", 1s); });
  auto early = std::async(std::launch::async, [=] { return rendezvous(rank_of(1, 3, 1, port), "", 1s); });
  std::this_thread::sleep_for(1800ms);
  EXPECT_EQ(rendezvous(rank_of(2, 3, 1, port), "", 1s), std::vector<std::string>{"h:1"});
  EXPECT_EQ(server.get(), std::vector<std::string>{"h:1"});
  EXPECT_EQ(early.get(), std::vector<std::string>{"h:1"});
}

// A forked child kept its parent's name at the rendezvous: the two asking as
// one rank were taken for one process.
TEST(Rendezvous, AForkedChildAsksAsAProcessOfItsOwn) {
  const std::string parent = this_process();
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    const std::string mine = this_process();
    [[maybe_unused]] const ssize_t n = ::write(fds[1], mine.data(), mine.size());
    _exit(0);
  }
  ::close(fds[1]);
  char said[256] = {};
  [[maybe_unused]] const ssize_t n = ::read(fds[0], said, sizeof(said) - 1);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_NE(std::string(said), parent);
  EXPECT_EQ(std::string(said).rfind(std::to_string(child) + "@", 0), 0u) << said;
  EXPECT_EQ(this_process(), parent);
}

// Two processes given one RANK (exported by hand, a script started twice):
// the servers took the second for a restart once the first left, and that
// rank's share was trained twice. They meet at the rendezvous now.
TEST(Rendezvous, TwoProcessesOfOneRankMeetAndTheSecondIsRefused) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 3, 1, port));
  auto first =
      std::async(std::launch::async, [=] { return rendezvous(rank_of(1, 3, 1, port), "", 10s, "", "41@node-a#0001"); });
  std::this_thread::sleep_for(300ms);
  const std::string what = error_of([&] { rendezvous(rank_of(1, 3, 1, port), "", 5s, "", "42@node-b#0002"); });
  EXPECT_NE(what.find("invalid-argument"), std::string::npos) << what;
  EXPECT_NE(what.find("two processes are rank 1: pid 41 on node-a (127.0.0.1:"), std::string::npos) << what;
  EXPECT_NE(what.find(") asked first, then pid 42 on node-b"), std::string::npos) << what;
  OtherWorkers others(rank_of(2, 3, 1, port), {2});
  EXPECT_EQ(rendezvous(rank_of(0, 3, 1, port), "h:1", 10s), std::vector<std::string>{"h:1"});
  EXPECT_EQ(first.get(), std::vector<std::string>{"h:1"});  // the first goes on
}

// A stopped rank 0 (Ctrl-Z, SIGSTOP) still has its connections accepted:
// the ranks reported its last answer as the reason they waited.
TEST(Rendezvous, ARankZeroThatWentQuietIsNamedAsPerhapsStopped) {
  auto quiet = transport::TcpSocket::listen(transport::SockAddr::parse("127.0.0.1:0"));
  const auto port = static_cast<uint16_t>(quiet.local_address().port());
  std::atomic<bool> done{false};
  std::atomic<std::chrono::steady_clock::time_point> said_at{std::chrono::steady_clock::now()};
  std::thread host([&] {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    transport::TcpSocket s;
    while (!s.valid() && !done) {
      s = quiet.try_accept(nullptr);
      std::this_thread::sleep_for(10ms);
    }
    if (!s.valid()) return;
    auto say = [&](const std::string& text) {
      s.recv_message(deadline, "rank");
      s.send_message(std::vector<uint8_t>(text.begin(), text.end()), deadline, "rank");
    };
    say("- challenge " + std::string(64, 'b'));
    say("- wait missing 1");  // and then nothing, as a stopped process
    said_at = std::chrono::steady_clock::now();
    while (!done) std::this_thread::sleep_for(10ms);
  });
  // Quiet for about 1.9 s when the wait ends (its 1.7 s, then a pause of 0.2 s
  // after the request that timed out): more than the 1.5 s after which rank 0
  // counts as quiet (read in whole seconds, it was 1, and not quiet).
  const std::string what = error_of([&] { rendezvous(rank_of(2, 3, 1, port), "", 1700ms); });
  const auto quiet_for = std::chrono::steady_clock::now() - said_at.load();
  done = true;
  host.join();
  // Its answer came late, on a loaded machine: perhaps not quiet long enough to say so.
  if (quiet_for < 1700ms) {
    EXPECT_TRUE(what.find("still lacks rank(s) 1") != std::string::npos ||
                what.find("answered last") != std::string::npos)
        << what;
    return;
  }
  EXPECT_NE(what.find("timeout: rank 2: rank 0, which hosts the rendezvous at 127.0.0.1:" + std::to_string(port) +
                      " (MASTER_ADDR and MASTER_PORT), answered last "),
            std::string::npos)
      << what;
  EXPECT_NE(what.find(", when rank(s) 1 were missing (is rank 0 stopped, by Ctrl-Z, SIGSTOP or a debugger"),
            std::string::npos)
      << what;
  EXPECT_EQ(what.find("still lacks"), std::string::npos) << what;
}

TEST(Rendezvous, UnreachableRendezvousIsNamedAfterTheTimeout) {
  const uint16_t port = free_port();  // nobody listens
  const auto start = std::chrono::steady_clock::now();
  Placement p = rank_of(1, 2, 1, port);
  p.master_addr_var = "SLURM_STEP_NODELIST";  // named as where the address came from, not MASTER_ADDR
  const std::string what = error_of([&] { rendezvous(p, "", 1s); });
  EXPECT_NE(what.find("could not reach the rendezvous at 127.0.0.1:" + std::to_string(port)), std::string::npos)
      << what;
  EXPECT_NE(what.find("(SLURM_STEP_NODELIST and MASTER_PORT; rank 0 hosts it)"), std::string::npos) << what;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

// Rank 0 that answered and then died: before, the waiting ranks reported its
// last answer ("still lacks server rank(s) 0,1") as if it were alive.
// Another program on MASTER_PORT that accepts and never answers: the ranks
// said they "could not reach" it.
TEST(Rendezvous, ASilentProgramOnThePortIsNamedAsSuch) {
  auto silent = transport::TcpSocket::listen(transport::SockAddr::parse("127.0.0.1:0"));  // the kernel accepts
  const auto port = static_cast<uint16_t>(silent.local_address().port());
  const std::string what = error_of([&] { rendezvous(rank_of(1, 2, 1, port), "", 1500ms); });
  EXPECT_NE(what.find("timeout"), std::string::npos) << what;
  EXPECT_NE(what.find("accepted the connection but never answered as rdmaps' rendezvous"), std::string::npos) << what;
  EXPECT_EQ(what.find("could not reach"), std::string::npos) << what;
}

// Another program that answers (an HTTP server at MASTER_PORT): the framing
// error alone named neither the rendezvous nor the variables that chose it.
TEST(Rendezvous, AProgramAnsweringOnThePortIsNamedAsNotTheRendezvous) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(at);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&at), sizeof(at)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&at), &length), 0);
  std::thread http([listener] {
    const int peer = ::accept(listener, nullptr, nullptr);
    if (peer < 0) return;
    const char answer[] = "HTTP/1.0 400 Bad Request\r\n\r\n";
    if (::write(peer, answer, sizeof(answer) - 1) < 0) {
    }
    ::sleep(1);
    ::close(peer);
  });
  Placement p = rank_of(1, 2, 1, ntohs(at.sin_port));
  p.master_addr_var = "MASTER_ADDR";
  p.master_port_var = "MASTER_PORT";
  const std::string what = error_of([&] { rendezvous(p, "", 5000ms); });
  http.join();
  ::close(listener);
  EXPECT_NE(what.find("rank 1: something at 127.0.0.1:"), std::string::npos) << what;
  EXPECT_NE(what.find("(MASTER_ADDR and MASTER_PORT) is not rdmaps' rendezvous"), std::string::npos) << what;
  EXPECT_NE(what.find("give the job another MASTER_PORT"), std::string::npos) << what;
}

TEST(Rendezvous, RankZeroThatStopsAnsweringIsReportedAsSuch) {
  const uint16_t port = free_port();
  auto host = std::make_unique<RendezvousHost>(rank_of(0, 3, 2, port));
  auto worker =
      std::async(std::launch::async, [=] { return error_of([&] { rendezvous(rank_of(2, 3, 2, port), "", 2s); }); });
  std::this_thread::sleep_for(500ms);
  host.reset();
  const std::string what = worker.get();
  EXPECT_NE(what.find("timeout"), std::string::npos) << what;
  EXPECT_NE(what.find("rank 0, which hosts the rendezvous at 127.0.0.1:" + std::to_string(port) +
                      " (MASTER_ADDR and MASTER_PORT), stopped answering while rank(s) 0-1 were missing"),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("nobody listens there"), std::string::npos) << what;  // the connect error
  EXPECT_EQ(what.find("still lacks"), std::string::npos) << what;
}

// MASTER_ADDR=::1: rank 0 listened on the IPv4 wildcard, so no rank ever
// reached it.
TEST(Rendezvous, AnIpv6MasterAddrIsServed) {
  const uint16_t port = free_port();
  Placement p0 = rank_of(0, 2, 1, port), p1 = rank_of(1, 2, 1, port);
  p0.master_addr = p1.master_addr = "::1";
  ServerDirectory directory(p0, 5s, "");  // rank 0 hosts the rendezvous here
  EXPECT_EQ(directory.method(), "the rendezvous at [::1]:" + std::to_string(port));
  EXPECT_EQ(directory.listen_address(), "[::1]:0");  // every rank on this host: loopback alone
  auto worker = std::async(std::launch::async, [=] { return rendezvous(p1, "", 3s); });
  EXPECT_EQ(rendezvous(p0, "[::1]:4000", 3s), std::vector<std::string>{"[::1]:4000"});
  EXPECT_EQ(worker.get(), std::vector<std::string>{"[::1]:4000"});
  EXPECT_EQ(wildcard_for("127.0.0.1", 5), "0.0.0.0:5");
  EXPECT_EQ(wildcard_for("[::1]", 5), "[::]:5");
}

// A rank 0 given MASTER_ADDR=127.0.0.1 listens on loopback alone: a rank
// given the host's real address got a bare "Connection refused".
TEST(Rendezvous, ARefusedConnectionToARealAddressSaysWhereALoopbackRankZeroListens) {
  ifaddrs* list = nullptr;
  ASSERT_EQ(::getifaddrs(&list), 0);
  std::string real;  // up, IPv4, not loopback
  for (ifaddrs* i = list; i && real.empty(); i = i->ifa_next)
    if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && (i->ifa_flags & IFF_UP) && !(i->ifa_flags & IFF_LOOPBACK)) {
      char text[INET_ADDRSTRLEN] = {};
      ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof(text));
      real = text;
    }
  ::freeifaddrs(list);
  if (real.empty()) GTEST_SKIP() << "no network interface but loopback";
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 2, 1, port));  // MASTER_ADDR=127.0.0.1: loopback alone
  Placement p = rank_of(1, 2, 1, port);
  p.master_addr = real;
  const std::string what = error_of([&] { rendezvous(p, "", 1s); });
  EXPECT_NE(what.find("could not reach the rendezvous at " + real), std::string::npos) << what;
  EXPECT_NE(what.find("(is rank 0 running, given this MASTER_ADDR? a rank 0 given a loopback one listens on loopback "
                      "alone)"),
            std::string::npos)
      << what;
}

TEST(Rendezvous, AnUnresolvableMasterAddrIsNamed) {
  Placement p = rank_of(1, 2, 1, 29500);
  p.master_addr = "no-such-host.invalid";
  const std::string what = error_of([&] { rendezvous(p, "", 2s); });
  EXPECT_NE(what.find("invalid-argument: MASTER_ADDR=no-such-host.invalid (rank 0's host"), std::string::npos) << what;
}

// MASTER_ADDR on loopback: the rendezvous is served there alone (on every
// address it offered a launch without a secret to the network).
TEST(Rendezvous, ALoopbackMasterAddrIsServedOnLoopbackOnly) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 2, 1, port));  // MASTER_ADDR=127.0.0.1
  OtherWorkers others(rank_of(1, 2, 1, port), {1});
  EXPECT_EQ(rendezvous(rank_of(0, 2, 1, port), "h:1", 5s), std::vector<std::string>{"h:1"});
  // 127.0.0.2 is this host too, but not the address the ranks dial.
  const std::string what = error_of([&] {
    transport::TcpSocket::connect(transport::SockAddr::parse("127.0.0.2:" + std::to_string(port)),
                                  std::chrono::steady_clock::now() + 2s);
  });
  EXPECT_NE(what.find("unreachable"), std::string::npos) << what;
}

// Rank 0 named by its host name, which this host may map to a loopback
// address (Debian's 127.0.1.1; 127.0.0.1 here): other hosts reach that name at
// a real address, so the rendezvous is served on every address.
TEST(Rendezvous, RankZeroNamedByItsHostNameIsServedOnEveryAddress) {
  char name[256] = {};
  ASSERT_EQ(::gethostname(name, sizeof(name) - 1), 0);
  const uint16_t port = free_port();
  Placement p = rank_of(0, 2, 1, port);
  p.master_addr = name;
  RendezvousHost host(p);
  EXPECT_EQ(error_of([&] {
              transport::TcpSocket::connect(transport::SockAddr::parse("127.0.0.2:" + std::to_string(port)),
                                            std::chrono::steady_clock::now() + 2s);
            }),
            "no error")
      << "MASTER_ADDR=" << name;
}

TEST(Rendezvous, RefusesAnotherLaunchAndADoubledServerRank) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 3, 1, port));
  std::string what = error_of([&] { rendezvous(rank_of(2, 4, 1, port), "", 5s); });
  EXPECT_NE(what.find("invalid-argument"), std::string::npos) << what;
  EXPECT_NE(what.find("was started with world size 4 and 1 server(s), rank 0 with 3 and 1"), std::string::npos) << what;
  what = error_of([&] { rendezvous(rank_of(1, 3, 1, port), "h:1", 5s); });
  EXPECT_NE(what.find("registers an address but only ranks below 1 serve"), std::string::npos) << what;
  // A server's address as workers will dial it: one the list would refuse is refused at registration
  // (the workers found it as they dialled it, naming --servers-list).
  for (const auto& [address, said] :
       {std::pair{"h:0", "server rank 0's address entry 1 'h:0' has port 0"},
        {"h", "server rank 0's address entry 1 'h' is not host:port"},
        {"::1:5", "is not host:port (an IPv6 address goes in brackets"},
        {"h:1,h:2", "server rank 0's address entry 1 'h:1,h:2' holds a comma: one host:port per entry"}}) {
    what = error_of([&] { rendezvous(rank_of(0, 3, 1, port), address, 5s); });
    EXPECT_NE(what.find(said), std::string::npos) << address << ": " << what;
  }
  OtherWorkers others(rank_of(1, 3, 1, port), {1, 2});
  EXPECT_EQ(rendezvous(rank_of(0, 3, 1, port), "h:1", 5s), std::vector<std::string>{"h:1"});
  what = error_of([&] { rendezvous(rank_of(0, 3, 1, port), "other:2", 5s); });
  EXPECT_NE(what.find("server rank 0 registered twice (h:1 and other:2)"), std::string::npos) << what;
}

// A server rank that went before the set was whole (killed; here, out of its
// time) was kept: its restarted copy was refused as "registered twice", and
// every rank got the dead address once the set was whole.
TEST(Rendezvous, AServerRankThatWentBeforeTheSetWasWholeIsForgotten) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 3, 2, port));
  const std::string what = error_of([&] { rendezvous(rank_of(1, 3, 2, port), "dead:1", 1s); });
  EXPECT_NE(what.find("still lacks rank(s) 0,2"), std::string::npos) << what;
  std::this_thread::sleep_for(300ms);  // rank 0's host sees its connection close
  auto restarted = std::async(std::launch::async, [=] { return rendezvous(rank_of(1, 3, 2, port), "new:1", 10s); });
  auto worker = std::async(std::launch::async, [=] { return rendezvous(rank_of(2, 3, 2, port), "", 10s); });
  const std::vector<std::string> servers{"h:5", "new:1"};
  EXPECT_EQ(rendezvous(rank_of(0, 3, 2, port), "h:5", 10s), servers);
  EXPECT_EQ(restarted.get(), servers);
  EXPECT_EQ(worker.get(), servers);
}

// Two jobs on one host with the same MASTER_PORT and secret (two srun steps):
// the second's rank 0 could not host, and its workers trained on the first
// job's server, which then ended when they left.
TEST(Rendezvous, RefusesARankOfAnotherLaunchIdOfTheSameShape) {
  const uint16_t port = free_port();
  Placement host_rank = rank_of(0, 3, 1, port);
  host_rank.launch_id = "slurm:41.0";
  RendezvousHost host(host_rank);
  Placement other = rank_of(2, 3, 1, port);
  other.launch_id = "slurm:42.0";
  std::string what = error_of([&] { rendezvous(other, "", 5s); });
  EXPECT_NE(what.find("invalid-argument"), std::string::npos) << what;
  EXPECT_NE(what.find("rank 2 is of another launch ('slurm:42.0') than rank 0 ('slurm:41.0')"), std::string::npos)
      << what;
  EXPECT_NE(what.find("give each job its own MASTER_PORT"), std::string::npos) << what;
  other.launch_id = "";
  what = error_of([&] { rendezvous(other, "", 5s); });
  EXPECT_NE(what.find("(no launch id) than rank 0 ('slurm:41.0')"), std::string::npos) << what;
  Placement server = rank_of(0, 3, 1, port);
  server.launch_id = "slurm:41.0";
  OtherWorkers others(server, {1, 2});
  EXPECT_EQ(rendezvous(server, "h:1", 5s), std::vector<std::string>{"h:1"});
}

// One connection to the rendezvous, as a rank of another build or no rank at all would use it.
class Peer {
 public:
  explicit Peer(uint16_t port)
      : socket_(transport::TcpSocket::connect(transport::SockAddr::parse("127.0.0.1:" + std::to_string(port)),
                                              std::chrono::steady_clock::now() + 5s)) {}
  std::string say(const std::string& text) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    socket_.send_message(std::vector<uint8_t>(text.begin(), text.end()), deadline, "host");
    auto reply = socket_.recv_message(deadline, "host");
    return std::string(reply.begin(), reply.end());
  }
  transport::TcpSocket& socket() { return socket_; }

 private:
  transport::TcpSocket socket_;
};

// `text` on a fresh connection, after the challenge a version 5 request needs.
std::string ask(uint16_t port, const std::string& text) {
  Peer peer(port);
  if (text.rfind("rdmaps-rendezvous 5 ", 0) == 0) {
    EXPECT_EQ(peer.say("rdmaps-rendezvous 5 challenge").rfind("- challenge ", 0), 0u);
  }
  return peer.say(text);
}

const std::string kNonce(64, 'a');

TEST(Rendezvous, MalformedRequestsAreRefusedAndTheHostServesOn) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 2, 1, port));
  EXPECT_EQ(ask(port, "GET / HTTP/1.0"), "error not a rendezvous request");
  // A rank of another rdmaps (version 2 had no nonce) is told so, in the form every version reads.
  EXPECT_EQ(ask(port, "rdmaps-rendezvous 2 2 1 0 - "),
            "error this rank speaks rendezvous version 2, rank 0 speaks 5: every rank of a job must run the same "
            "rdmaps");
  EXPECT_EQ(ask(port, "rdmaps-rendezvous 4 " + kNonce + " - 2 1 0 - "),
            "error this rank speaks rendezvous version 4, rank 0 speaks 5: every rank of a job must run the same "
            "rdmaps");
  EXPECT_EQ(Peer(port).say("rdmaps-rendezvous 5 " + kNonce + " - 2 1 0 h:9 1@h#1 "),
            "- error a request before its connection's challenge");
  EXPECT_EQ(ask(port, "rdmaps-rendezvous 5 xyz - 2 1 0 - 1@h#1 "), "- error not a rendezvous request");
  EXPECT_EQ(ask(port, "rdmaps-rendezvous 5 " + kNonce + " - 2 1 7 - 1@h#1 "),
            "- error rank 7 is not below the world size");
  EXPECT_EQ(ask(port, "rdmaps-rendezvous 5 " + kNonce + " - 2 1 0 h:9"), "- error not a rendezvous request");
  // A message longer than any request closes that connection only.
  {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    auto s = transport::TcpSocket::connect(transport::SockAddr::parse("127.0.0.1:" + std::to_string(port)), deadline);
    std::string big(8192, 'x');
    s.send_message(std::vector<uint8_t>(big.begin(), big.end()), deadline, "host");
    EXPECT_THROW(s.recv_message(deadline, "host"), Error);
  }
  // Served on, and waits for rank 1 before it answers "ok".
  EXPECT_EQ(ask(port, "rdmaps-rendezvous 5 " + kNonce + " - 2 1 0 h:9 1@h#1 "), "- wait missing 1");
}

// A rank whose node died without a FIN left its connection open at rank 0
// for 10 s: its restart elsewhere within them was refused for good as a twin.
TEST(Rendezvous, ARankThatStoppedAskingIsNoTwinOfItsRestart) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 3, 1, port));
  {
    Peer dead(port);  // asks once as rank 1, then never again, its connection left open
    ASSERT_EQ(dead.say("rdmaps-rendezvous 5 challenge").rfind("- challenge ", 0), 0u);
    EXPECT_EQ(dead.say("rdmaps-rendezvous 5 " + kNonce + " - 3 1 1 - 7@gone#1 "), "- wait missing 0,2");
    std::this_thread::sleep_for(3500ms);
    auto restarted =
        std::async(std::launch::async, [=] { return rendezvous(rank_of(1, 3, 1, port), "", 10s, "", "8@new#2"); });
    OtherWorkers others(rank_of(2, 3, 1, port), {2});
    EXPECT_EQ(rendezvous(rank_of(0, 3, 1, port), "h:1", 10s), std::vector<std::string>{"h:1"});
    EXPECT_EQ(restarted.get(), std::vector<std::string>{"h:1"});
  }
}

// The rendezvous answered anyone: a peer without the secret learned rank 0's
// launch id, then the world size, then every server's address, and could
// register a forged one before the real server rank.
TEST(Rendezvous, ProvesTheSecretBothWaysAndTellsAPeerWithoutItNothing) {
  const uint16_t port = free_port();
  const std::string secret = "0123456789abcdef-the-job";
  Placement host_rank = rank_of(0, 3, 1, port);
  host_rank.launch_id = "slurm:41.0";
  RendezvousHost host(host_rank, secret);
  Placement worker = rank_of(2, 3, 1, port);
  worker.launch_id = "slurm:41.0";
  for (const std::string& text :
       {"rdmaps-rendezvous 5 " + kNonce + " - 9 9 0 evil:1 1@e#1 guess",
        "rdmaps-rendezvous 5 " + kNonce + " " + std::string(64, '0') + " 3 1 0 evil:1 1@e#1 slurm:41.0"}) {
    const std::string reply = ask(port, text);
    EXPECT_EQ(reply.rfind("- error the request ", 0), 0u) << reply;
    for (const char* secretive : {"41.0", "3 and 1", "evil", "h:1"})
      EXPECT_EQ(reply.find(secretive), std::string::npos) << reply;
  }
  std::string what = error_of([&] { rendezvous(worker, "", 3s); });
  EXPECT_NE(what.find("the request proves no secret, and rank 0 has one"), std::string::npos) << what;
  what = error_of([&] { rendezvous(worker, "", 3s, "another-secret-0123456789"); });
  EXPECT_NE(what.find("does not prove rank 0's secret"), std::string::npos) << what;
  Placement rank1 = worker;
  rank1.rank = 1;
  OtherWorkers others(rank1, {1, 2}, secret);
  EXPECT_EQ(rendezvous(host_rank, "h:1", 3s, secret), std::vector<std::string>{"h:1"});  // nothing forged got in
  for (const auto& learned : others.answers()) EXPECT_EQ(learned, std::vector<std::string>{"h:1"});
  // A rank with a secret refuses a rendezvous that proves none.
  const uint16_t open_port = free_port();
  RendezvousHost open_host(rank_of(0, 2, 1, open_port));
  what = error_of([&] { rendezvous(rank_of(1, 2, 1, open_port), "", 3s, secret); });
  EXPECT_NE(what.find("without a secret, and this rank has one"), std::string::npos) << what;
}

// A peer without the secret naming every rank of the world in turn: rank 0
// logs its refusals a line a second for all such peers together (keyed by
// the rank each named, it logged a line a second per rank), while a refused
// rank that proved the secret keeps a line of its own.
TEST(Rendezvous, RefusalsOfRequestsProvingNothingShareOneLogLine) {
  const uint16_t port = free_port();
  const std::string secret = "0123456789abcdef-the-job";
  test::OutputCapture log;
  RendezvousHost host(rank_of(0, 9, 1, port), secret);
  const auto start = std::chrono::steady_clock::now();
  for (int rank = 1; rank < 9; ++rank) {
    const std::string reply = ask(
        port, "rdmaps-rendezvous 5 " + kNonce + " - 9 1 " + std::to_string(rank) + " - 1@e#1 " + std::string(64, 'x'));
    EXPECT_EQ(reply.rfind("- error the request proves no secret", 0), 0u) << reply;
  }
  const bool within_a_second = std::chrono::steady_clock::now() - start < 900ms;
  // Proven, of another world size: its own line beside the shared one.
  Placement other = rank_of(3, 4, 1, port);
  const std::string what = error_of([&] { rendezvous(other, "", 2s, secret); });
  EXPECT_NE(what.find("world size 4"), std::string::npos) << what;
  const std::string said = log.end();
  size_t unproven = 0, proven = 0;
  for (size_t at = 0; (at = said.find("rendezvous: refused ", at)) != std::string::npos; ++at) {
    const size_t end = said.find('\n', at);
    const std::string line = said.substr(at, end - at);
    ++(line.find("proves no secret") != std::string::npos ? unproven : proven);
  }
  if (within_a_second) {
    EXPECT_EQ(unproven, 1u) << said;
  }
  EXPECT_GE(unproven, 1u) << said;
  EXPECT_LE(unproven, 2u) << said;
  EXPECT_GE(proven, 1u) << said;
}

// A peer without the secret asking in a missing worker's name was quoted to
// every rank as the reason it was refused: that ended the wait for late
// workers (a refusal ends it), and took the place of a real rank's proven
// refusal. Unproven now, it does neither.
TEST(Rendezvous, ARequestProvingNoSecretNeitherEndsTheWaitForLateWorkersNorHidesARealRefusal) {
  const std::string secret = "0123456789abcdef-the-job";
  const std::string forged = "rdmaps-rendezvous 5 " + kNonce + " - 3 1 2 - 1@e#1 x";
  {
    const uint16_t port = free_port();
    RendezvousHost host(rank_of(0, 3, 1, port), secret);
    auto server = std::async(std::launch::async, [=] { return rendezvous(rank_of(0, 3, 1, port), "h:1", 1s, secret); });
    auto early = std::async(std::launch::async, [=] { return rendezvous(rank_of(1, 3, 1, port), "", 1s, secret); });
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(ask(port, forged).rfind("- error the request proves no secret", 0), 0u);
    std::this_thread::sleep_for(1500ms);  // past the others' timeout: only a late worker is missing
    EXPECT_EQ(rendezvous(rank_of(2, 3, 1, port), "", 1s, secret), std::vector<std::string>{"h:1"});
    EXPECT_EQ(server.get(), std::vector<std::string>{"h:1"});
    EXPECT_EQ(early.get(), std::vector<std::string>{"h:1"});
  }
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 3, 1, port), secret);
  error_of([&] { rendezvous(rank_of(2, 4, 1, port), "", 2s, secret); });  // refused: another world size
  ask(port, forged);
  const std::string what = error_of([&] { rendezvous(rank_of(1, 3, 1, port), "", 1s, secret); });
  EXPECT_NE(what.find("rank 2 was refused by rank 0 (from 127.0.0.1:"), std::string::npos) << what;
  EXPECT_NE(what.find("rank 2 was started with world size 4"), std::string::npos) << what;
  EXPECT_EQ(what.find("proves no secret"), std::string::npos) << what;
}

// What a peer put in its request (a launch id, a process name) reaches the
// other ranks' errors, quoted: escapes and carriage returns in it rewrote
// their screens. Shown as '?', and the error stays one line per reason.
TEST(Rendezvous, APeersTextQuotedToOtherRanksIsShownPrintable) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 3, 1, port));  // no secret: anyone's request counts
  const std::string reply =
      ask(port, "rdmaps-rendezvous 5 " + kNonce + " - 3 1 2 - 1@\x1b[31mevil#1 \x1b[2J\x1b[1;31mFAKE\r");
  EXPECT_EQ(reply.rfind("- error rank 2 is of another launch", 0), 0u) << reply;
  const std::string what = error_of([&] { rendezvous(rank_of(1, 3, 1, port), "", 1s); });
  EXPECT_NE(what.find("is of another launch ('?[2J?[1;31mFAKE?')"), std::string::npos) << what;
  for (const char c : what) EXPECT_TRUE(static_cast<unsigned char>(c) >= 0x20 || c == '\n') << what;
}

// A request proved only its own nonce: one recorded at an earlier job's
// rendezvous (same secret, same launch id) registered that job's stale server
// address at the next one, whose real server rank was then refused.
TEST(Rendezvous, ARequestRecordedOnOneConnectionProvesNothingOnAnother) {
  const std::string secret = "0123456789abcdef-the-job";
  // Where the recording happens: a listener that answers challenges and keeps the rest.
  auto recorder = transport::TcpSocket::listen(transport::SockAddr::parse("127.0.0.1:0"));
  const auto recorder_port = static_cast<uint16_t>(recorder.local_address().port());
  std::vector<std::string> recorded;
  std::thread listen([&] {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    transport::TcpSocket s;
    while (!s.valid() && std::chrono::steady_clock::now() < deadline) {
      s = recorder.try_accept(nullptr);
      std::this_thread::sleep_for(10ms);
    }
    while (true) {
      auto message = s.recv_message(deadline, "rank");
      recorded.emplace_back(message.begin(), message.end());
      if (!recorded.back().ends_with(" challenge")) return;  // a request: recorded
      const std::string challenge = "- challenge " + std::string(64, 'b');
      s.send_message(std::vector<uint8_t>(challenge.begin(), challenge.end()), deadline, "rank");
    }
  });
  Placement old_server = rank_of(0, 2, 1, recorder_port);
  old_server.launch_id = "job-7";
  error_of([&] { rendezvous(old_server, "old:1", 1s, secret); });
  listen.join();
  ASSERT_FALSE(recorded.empty());

  const uint16_t port = free_port();
  Placement server = rank_of(0, 2, 1, port);
  server.launch_id = "job-7";
  RendezvousHost host(server, secret);
  Peer replay(port);
  std::string reply;
  for (const auto& message : recorded) reply = replay.say(message);
  EXPECT_EQ(reply.rfind("- error the request does not prove rank 0's secret", 0), 0u) << reply;
  OtherWorkers others(server, {1}, secret);
  EXPECT_EQ(rendezvous(server, "new:2", 3s, secret), std::vector<std::string>{"new:2"});
}

// A launch id near 4 KB made a request rank 0 drops unanswered: the rank
// waited out its timeout with "never answered as rdmaps' rendezvous".
TEST(Rendezvous, ARequestTooLongForRankZeroIsNamedBeforeItIsSent) {
  const uint16_t port = free_port();
  Placement p = rank_of(1, 2, 1, port);
  p.launch_id = std::string(5000, 'j');
  const auto start = std::chrono::steady_clock::now();
  const std::string what = error_of([&] { rendezvous(p, "", 10s); });
  EXPECT_NE(what.find("invalid-argument"), std::string::npos) << what;
  EXPECT_NE(what.find("its launch id (5000 bytes, from RDMAPS_JOB_ID"), std::string::npos) << what;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s) << "it waited for an answer";
}

// Every connection to the rendezvous was kept for the job's life: silent
// ones took rank 0's descriptors until its server accepted no worker.
TEST(Rendezvous, ConnectionsThatProveNothingAreBounded) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 2, 1, port), "0123456789abcdef-the-job");
  auto open_files = [] {
    return std::distance(std::filesystem::directory_iterator("/proc/self/fd"), std::filesystem::directory_iterator{});
  };
  const auto before = open_files();
  constexpr long kFlood = 400;
  test::ScopedSoftFileLimit limit(static_cast<uint64_t>(before + 3 * kFlood));
  const auto address = transport::SockAddr::parse("127.0.0.1:" + std::to_string(port));
  std::vector<transport::TcpSocket> flood;
  for (long i = 0; i < kFlood; ++i)
    flood.push_back(transport::TcpSocket::connect(address, std::chrono::steady_clock::now() + 5s));
  std::this_thread::sleep_for(500ms);  // the host accepts them all meanwhile
  // This process holds the flood's ends; the host at most kMaxPending of the others.
  EXPECT_LE(open_files() - before, kFlood + static_cast<long>(RendezvousHost::kMaxPending) + 8);
  OtherWorkers others(rank_of(1, 2, 1, port), {1}, "0123456789abcdef-the-job");
  EXPECT_EQ(rendezvous(rank_of(0, 2, 1, port), "h:1", 5s, "0123456789abcdef-the-job"), std::vector<std::string>{"h:1"});
}

// One peer that asked without reading held the host's only thread 5 s per
// answer, and every rank with it.
TEST(Rendezvous, APeerThatNeverReadsHoldsUpNoRank) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 2, 1, port));
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  Peer peer(port);
  transport::TcpSocket& hog = peer.socket();
  const int small = 1024;
  ::setsockopt(hog.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  ASSERT_EQ(peer.say("rdmaps-rendezvous 5 challenge").rfind("- challenge ", 0), 0u);
  // Rank 0 registering a 3000-byte address: each answer carries it back.
  const std::string address = std::string(2998, 'a') + ":1";
  const std::string request = "rdmaps-rendezvous 5 " + kNonce + " - 2 1 0 " + address + " 1@hog#1 ";
  std::thread asker([&] {
    try {
      for (int i = 0; i < 2000; ++i)
        hog.send_message(std::vector<uint8_t>(request.begin(), request.end()), deadline, "host");
    } catch (const Error&) {  // the host stopped reading it: what it should do
    }
  });
  std::this_thread::sleep_for(500ms);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(rendezvous(rank_of(1, 2, 1, port), "", 10s), std::vector<std::string>{address});
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s) << "a rank waited on a peer that does not read";
  ::shutdown(hog.fd(), SHUT_RDWR);
  asker.join();
}

// Rank 0 of a large launch may run out of open files while ranks connect:
// the host thread let the accept error escape and std::terminate ended the
// process. It waits and serves on once files are free.
TEST(Rendezvous, AHostOutOfOpenFilesServesOnOnceFilesAreFree) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 2, 1, port));
  const auto address = transport::SockAddr::parse("127.0.0.1:" + std::to_string(port));
  std::vector<transport::TcpSocket> flood;
  {
    const auto open_now = static_cast<uint64_t>(
        std::distance(std::filesystem::directory_iterator("/proc/self/fd"), std::filesystem::directory_iterator{}));
    test::ScopedSoftFileLimit limit(open_now + 6);
    ASSERT_TRUE(limit.lowered());
    try {  // this process's connections and the host's accepts share the limit
      for (int i = 0; i < 64; ++i)
        flood.push_back(transport::TcpSocket::connect(address, std::chrono::steady_clock::now() + 2s));
    } catch (const Error&) {  // out of files: the rest wait in the host's backlog
    }
    std::this_thread::sleep_for(300ms);  // the host's accepts fail meanwhile
  }
  flood.clear();
  OtherWorkers others(rank_of(1, 2, 1, port), {1});
  EXPECT_EQ(rendezvous(rank_of(0, 2, 1, port), "10.0.0.1:4000", 10s), (std::vector<std::string>{"10.0.0.1:4000"}));
}

TEST(Rendezvous, RankZeroCannotHostTwice) {
  const uint16_t port = free_port();
  RendezvousHost host(rank_of(0, 2, 1, port));
  const std::string what = error_of([&] { RendezvousHost second(rank_of(0, 2, 1, port)); });
  EXPECT_NE(what.find("rank 0 cannot host the job's rendezvous"), std::string::npos) << what;
  EXPECT_NE(what.find("also rank 0"), std::string::npos) << what;
  // Port 0 is no advice for a port every rank must know.
  EXPECT_EQ(what.find("0 for any free one"), std::string::npos) << what;
  EXPECT_NE(what.find("give them all the same free one"), std::string::npos) << what;
}

TEST(ServerDirectory, ListenAndAdvertise) {
  Placement p = rank_of(1, 3, 2, 29500);
  p.servers = {"a:7001", "b:7002"};
  ServerDirectory listed(p, 1s, "");
  EXPECT_EQ(listed.method(), "RDMAPS_SERVERS");
  EXPECT_EQ(listed.listen_address(), "0.0.0.0:7002");
  EXPECT_EQ(listed.exchange("ignored"), p.servers);
  auto env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "RDMAPS_ADVERTISE_ADDR") return "node7";
    return std::nullopt;
  };
  auto none = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  EXPECT_EQ(advertised_address(p, "0.0.0.0:4000", env), "node7:4000");
  // An IPv6 host is advertised in brackets, the one form an address takes it in.
  auto v6 = [](const std::string& name) -> std::optional<std::string> {
    if (name == "RDMAPS_ADVERTISE_ADDR") return "::1";
    return std::nullopt;
  };
  EXPECT_EQ(advertised_address(p, "0.0.0.0:4000", v6), "[::1]:4000");
  // In brackets, or scoped, an IPv6 address is one too.
  for (const char* given : {"[2001:db8::1]", "fe80::1%eth0"}) {
    auto env6 = [given](const std::string& name) -> std::optional<std::string> {
      if (name == "RDMAPS_ADVERTISE_ADDR") return given;
      return std::nullopt;
    };
    EXPECT_NO_THROW(advertised_address(p, "0.0.0.0:4000", env6)) << given;
  }
  EXPECT_EQ(advertised_address(p, "0.0.0.0:4000",
                               [](const std::string& name) -> std::optional<std::string> {
                                 if (name == "RDMAPS_ADVERTISE_ADDR") return "[2001:db8::1]";
                                 return std::nullopt;
                               }),
            "[2001:db8::1]:4000");
  // Listened for on the advertised address's family: an IPv6 one was
  // advertised while the server listened on IPv4 alone (every worker refused).
  Placement r = rank_of(1, 3, 2, 29500);
  r.master_addr = "127.0.0.1";
  EXPECT_EQ(ServerDirectory(r, 1s, "", v6).listen_address(), "[::]:0");
  EXPECT_EQ(ServerDirectory(r, 1s, "", env).listen_address(), "0.0.0.0:0") << "a host name keeps the rendezvous's";
  // Nothing advertised and every rank on this host: loopback alone, UCX too
  // (the wildcard put a one-machine job's ports on every interface).
  EXPECT_EQ(ServerDirectory(r, 1s, "", none).listen_address(), "127.0.0.1:0");
  Placement elsewhere = r;
  elsewhere.master_addr = "node1";  // reached from other hosts
  EXPECT_EQ(ServerDirectory(elsewhere, 1s, "", none).listen_address(), "0.0.0.0:0");
  // Not a host: named, not advertised as "[node1:5000]:4000" or " node1:4000".
  // A comma split the job's list of servers: every rank failed with "2 server addresses for 1 servers".
  for (const char* bad : {"node1:5000", " node1", "[node1:5000]", "node 1", "node1,node2"}) {
    auto given = [bad](const std::string& name) -> std::optional<std::string> {
      if (name == "RDMAPS_ADVERTISE_ADDR") return bad;
      return std::nullopt;
    };
    const std::string what = error_of([&] { advertised_address(p, "0.0.0.0:4000", given); });
    EXPECT_NE(what.find("RDMAPS_ADVERTISE_ADDR='" + std::string(bad) + "' is not a host name or address"),
              std::string::npos)
        << what;
  }
  EXPECT_EQ(advertised_address(p, "10.1.2.3:4000", none), "10.1.2.3:4000");
  // A wildcard bind: the local end of the route toward the rendezvous host.
  p.master_addr = "127.0.0.1";
  EXPECT_EQ(advertised_address(p, "0.0.0.0:4000", none), "127.0.0.1:4000");
}

// MASTER_ADDR=node0 where node0's /etc/hosts maps its own name to 127.0.1.1
// (Debian's installer does; this host's name may map to 127.0.0.1): rank 0
// advertised its route to itself, loopback, and workers elsewhere were refused.
TEST(ServerDirectory, RankZeroNamedByItsHostNameAdvertisesNoLoopback) {
  char name[256] = {};
  ASSERT_EQ(::gethostname(name, sizeof(name) - 1), 0);
  Placement p = rank_of(0, 3, 1, 29500);
  p.master_addr = name;
  auto none = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  ifaddrs* list = nullptr;
  ASSERT_EQ(::getifaddrs(&list), 0);
  bool interface = false;  // up, IPv4, not loopback
  for (ifaddrs* i = list; i; i = i->ifa_next)
    interface |=
        i->ifa_addr && i->ifa_addr->sa_family == AF_INET && (i->ifa_flags & IFF_UP) && !(i->ifa_flags & IFF_LOOPBACK);
  ::freeifaddrs(list);
  if (!interface) GTEST_SKIP() << "no network interface but loopback: nothing else to advertise";
  const std::string advertised = advertised_address(p, "0.0.0.0:4000", none);
  EXPECT_NE(advertised.rfind("127.", 0), 0u) << "MASTER_ADDR=" << name << " advertised " << advertised;
  // Named as loopback, every rank is on this host: loopback it is.
  for (const char* local : {"127.0.0.1", "localhost"}) {
    p.master_addr = local;
    EXPECT_EQ(advertised_address(p, "0.0.0.0:4000", none), "127.0.0.1:4000") << local;
  }
}

// An IPv6 entry: the server listened on 0.0.0.0:PORT and workers connecting
// to [::1]:PORT were refused.
TEST(ServerDirectory, AServerListensOnTheFamilyOfItsEntry) {
  Placement p = rank_of(0, 3, 2, 29500);
  p.servers = {"[::1]:7001", "127.0.0.1:7002"};
  EXPECT_EQ(ServerDirectory(p, 1s, "").listen_address(), "[::]:7001");
  p.rank = 1;
  EXPECT_EQ(ServerDirectory(p, 1s, "").listen_address(), "0.0.0.0:7002");
  // And workers reach it there.
  const uint16_t port = free_port();
  p.rank = 0;
  p.servers[0] = "[::1]:" + std::to_string(port);
  auto listener = transport::TcpSocket::listen(transport::SockAddr::parse(ServerDirectory(p, 1s, "").listen_address()));
  EXPECT_NO_THROW(
      transport::TcpSocket::connect(transport::SockAddr::parse(p.servers[0]), std::chrono::steady_clock::now() + 2s));
}

// rdmaps-server --listen with another port than its RDMAPS_SERVERS entry
// listened where no worker connects.
TEST(ServerDirectory, AListenGivenByHandKeepsTheEntrysPort) {
  Placement p = rank_of(1, 3, 2, 29500);
  p.servers = {"a:7001", "b:7002"};
  ServerDirectory d(p, 1s, "");
  EXPECT_NO_THROW(d.check_listen("10.0.0.2:7002", "--listen"));
  const std::string what = error_of([&] { d.check_listen("0.0.0.0:7003", "--listen"); });
  EXPECT_NE(what.find("--listen 0.0.0.0:7003 listens on another port than this server's RDMAPS_SERVERS entry 2 "
                      "'b:7002'"),
            std::string::npos)
      << what;
  p.servers.clear();  // the rendezvous advertises what is bound
  EXPECT_NO_THROW(ServerDirectory(p, 1s, "").check_listen("0.0.0.0:7003", "--listen"));
}

// Rank 0 where MASTER_ADDR is another host (srun's launch node, say): every
// rank waited there until its timeout; rank 0 says so at once.
TEST(ServerDirectory, RankZeroRefusesARendezvousAddressNotItsOwn) {
  Placement p = rank_of(0, 2, 1, free_port());
  p.master_addr = "192.0.2.1";  // TEST-NET-1: never an address of this host
  p.master_addr_var = "SLURM_LAUNCH_NODE_IPADDR";
  const std::string what = error_of([&] { ServerDirectory d(p, 1s, ""); });
  EXPECT_NE(what.find("SLURM_LAUNCH_NODE_IPADDR (192.0.2.1), but that is not an address of this host"),
            std::string::npos)
      << what;
  EXPECT_EQ(what.find("heterogeneous"), std::string::npos) << what;
  // A heterogeneous step's SLURM_STEP_NODELIST is its components' lists
  // joined and sorted (servers on node10, workers on node[3-4]: node3): the
  // refusal says how to name task 0's host.
  p.master_addr_var = "SLURM_STEP_NODELIST";
  const Environment het = [](const std::string& name) -> std::optional<std::string> {
    if (name == "SLURM_HET_SIZE") return "2";
    return std::nullopt;
  };
  const std::string het_what = error_of([&] { ServerDirectory d(p, 1s, "", het); });
  EXPECT_NE(het_what.find("in a heterogeneous step (SLURM_HET_SIZE=2)"), std::string::npos) << het_what;
  EXPECT_NE(het_what.find("SLURM_JOB_NODELIST_HET_GROUP_0"), std::string::npos) << het_what;
  // Given by hand, it may be a NAT's or a virtual IP forwarding here: warned of, not refused.
  p.master_addr_var = "MASTER_ADDR";
  {
    test::OutputCapture log;
    EXPECT_NO_THROW(ServerDirectory(p, 1s, ""));
    const std::string said = log.end();
    EXPECT_NE(said.find("MASTER_ADDR (192.0.2.1), but that is not an address of this host"), std::string::npos) << said;
  }
  for (const char* local : {"127.0.0.1", "localhost", "127.0.1.1"}) {
    p.master_addr = local;
    EXPECT_NO_THROW(ServerDirectory(p, 1s, "")) << local;
  }
  p.rank = 1;  // another rank only connects there
  p.master_addr = "192.0.2.1";
  EXPECT_NO_THROW(ServerDirectory(p, 1s, ""));
}

// A server whose RDMAPS_SERVERS entry names another host: its workers connect
// there; it printed this host's address and said nothing.
TEST(ServerDirectory, AServerWhoseEntryIsAnotherHostSaysSo) {
  Placement p = rank_of(1, 3, 2, 29500);
  p.servers = {"127.0.0.1:7001", "192.0.2.1:7002"};
  test::OutputCapture log;
  { ServerDirectory d(p, 1s, ""); }
  p.rank = 0;
  { ServerDirectory d(p, 1s, ""); }  // its own entry is local: nothing said
  const std::string said = log.end();
  EXPECT_NE(said.find("serves RDMAPS_SERVERS entry 2 '192.0.2.1:7002', but '192.0.2.1' is not an address of this "
                      "host"),
            std::string::npos)
      << said;
  EXPECT_EQ(said.find("entry 1"), std::string::npos) << said;
}

TEST(ServerDirectory, UnderTorchrunTheAgentHoldsMasterPort) {
  Placement p = rank_of(0, 2, 1, free_port());
  auto torchrun = [](const std::string& name) -> std::optional<std::string> {
    if (name == "TORCHELASTIC_USE_AGENT_STORE") return "True";
    return std::nullopt;
  };
  const std::string what = error_of([&] { ServerDirectory d(p, 1s, "", torchrun); });
  EXPECT_NE(what.find("set RDMAPS_MASTER_PORT"), std::string::npos) << what;
  // Set but empty is unset, as everywhere else: rank 0 tried to host on the agent's port.
  const std::string agent_port = std::to_string(free_port()), ours = std::to_string(free_port());
  std::map<std::string, std::string> vars = {{"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                             {"RANK", "0"},
                                             {"WORLD_SIZE", "2"},
                                             {"MASTER_ADDR", "127.0.0.1"},
                                             {"MASTER_PORT", agent_port},
                                             {"RDMAPS_MASTER_PORT", ""}};
  const auto env = [&vars](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional(it->second);
  };
  const std::string empty = error_of([&] { ServerDirectory d(*detect(env, 1), 1s, "", env); });
  EXPECT_NE(empty.find("set RDMAPS_MASTER_PORT"), std::string::npos) << empty;
  vars["RDMAPS_MASTER_PORT"] = ours;
  EXPECT_EQ(error_of([&] { ServerDirectory d(*detect(env, 1), 1s, "", env); }), "no error");
}

// A rendezvous whose port came from RDMAPS_MASTER_PORT (torchrun's MASTER_PORT
// is its agent's) is named by that variable: users were told to fix MASTER_PORT.
TEST(Rendezvous, ErrorsNameTheVariableThatGaveThePort) {
  Placement p = rank_of(0, 2, 1, free_port());
  p.master_port_var = "RDMAPS_MASTER_PORT";
  RendezvousHost host(p);
  const std::string twice = error_of([&] { RendezvousHost second(p); });
  EXPECT_NE(twice.find("(port " + std::to_string(p.master_port) + ", from RDMAPS_MASTER_PORT)"), std::string::npos)
      << twice;
  Placement lonely = rank_of(1, 2, 1, free_port());  // nobody hosts there
  lonely.master_port_var = "RDMAPS_MASTER_PORT";
  const std::string timeout = error_of([&] { rendezvous(lonely, "", 300ms); });
  EXPECT_NE(timeout.find("MASTER_ADDR and RDMAPS_MASTER_PORT"), std::string::npos) << timeout;
  EXPECT_NE(timeout.find("0.3 s"), std::string::npos) << timeout;
  // A job of another launch id at this host's port is told to move the variable that set it.
  Placement other = rank_of(1, 2, 1, p.master_port);
  other.launch_id = "another job";
  other.master_port_var = "RDMAPS_MASTER_PORT";
  const std::string refused = error_of([&] { rendezvous(other, "", 5s); });
  EXPECT_NE(refused.find("give each job its own RDMAPS_MASTER_PORT"), std::string::npos) << refused;
}

}  // namespace
}  // namespace rdmaps::launch
