// Security: what a peer that does not hold the shared secret can do to a
// running server (nothing), what an admitted peer can do with oversized or
// malformed set-up messages (be refused), and what silent or half-open
// connections do to the serving loops (nothing). Each case runs beside an
// honest worker in its own process whose exact-SGD result is checked bit for
// bit (docs/security.md).
#include <sys/socket.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "src/ps/pending_peers.h"
#include "src/ps/protocol.h"
#include "tests/common/log_watch.h"
#include "tests/common/output_capture.h"
#include "tests/ps/fixture.h"
#include "tests/transport/fixture.h"
#include "transport/bootstrap.h"
#include "transport/tcp_socket.h"

namespace rdmaps::test {
namespace {

using transport::SockAddr;
using transport::TcpSocket;
using Bytes = std::vector<uint8_t>;
using Clock = std::chrono::steady_clock;
namespace bootstrap = transport::bootstrap;

class PsSecurityTest : public PsTest {};

// The honest worker's pushes as the server counts them: one per shard per step.
constexpr uint64_t kSteadyPushes = kSteadySteps * ((kFaultFloats + kFaultShard - 1) / kFaultShard);

TcpSocket raw_connect(const std::string& address) {
  return TcpSocket::connect(SockAddr::parse(address), Clock::now() + 5s);
}

void send_raw(const TcpSocket& s, const Bytes& b) { s.send_all(b.data(), b.size(), Clock::now() + 5s, "server"); }

// Every message the server sends until it closes; what an attacker reads.
std::vector<Bytes> read_until_closed(const TcpSocket& s) {
  std::vector<Bytes> got;
  try {
    for (;;) got.push_back(s.recv_message(Clock::now() + 10s, "server"));
  } catch (const Error& e) {
    if (e.code() == Errc::kTimeout) ADD_FAILURE() << "the server kept a refused connection open: " << e.what();
  }
  return got;
}

Bytes random_bytes(std::mt19937_64& rng, size_t n) {
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

void send_attack(const TcpSocket& s, int kind, bootstrap::Open& open, std::mt19937_64& rng);

// One attack of a peer without the secret; returns what the server sent it.
std::vector<Bytes> attack(const std::string& address, int kind, std::mt19937_64& rng) {
  TcpSocket s = raw_connect(address);
  bootstrap::Open open{bootstrap::kHasSecret, transport::random_nonce()};
  try {
    send_attack(s, kind, open, rng);
  } catch (const Error& e) {
    if (e.code() != Errc::kPeerGone) throw;  // the server hung up mid-attack: fine
  }
  ::shutdown(s.fd(), SHUT_WR);  // nothing more will come
  return read_until_closed(s);
}

void send_attack(const TcpSocket& s, int kind, bootstrap::Open& open, std::mt19937_64& rng) {
  auto deadline = Clock::now() + 5s;
  switch (kind % 5) {
    case 0: {  // the old transport's hello: magic, version 1, a malformed UCX address (17 bytes)
      Bytes m(17);
      uint32_t head[2] = {bootstrap::kMagic, 1};
      std::memcpy(m.data(), head, 8);
      Bytes tail = random_bytes(rng, 9);
      std::memcpy(m.data() + 8, tail.data(), 9);
      s.send_message(m, deadline, "server");
      break;
    }
    case 1:  // an opening without the secret, then a made-up proof and address
      open.flags = 0;
      [[fallthrough]];
    case 2: {  // claims the secret, proves a wrong one
      s.send_message(bootstrap::encode(open), deadline, "server");
      bootstrap::Open theirs = bootstrap::parse_open(s.recv_message(deadline, "server", 64), "server");
      bootstrap::Proven p;
      p.address = random_bytes(rng, 1 + rng() % 300);
      p.proof = transport::prove("not the secret, but long enough", "rdmaps bootstrap client", open.nonce, theirs.nonce,
                                 p.address, {});
      s.send_message(bootstrap::encode(p), deadline, "server");
      break;
    }
    case 3: {  // a huge announced length, then silence on the write side
      uint32_t n = 0x7fffffff;
      send_raw(s, Bytes(reinterpret_cast<uint8_t*>(&n), reinterpret_cast<uint8_t*>(&n) + 4));
      break;
    }
    default:  // random bytes of random length
      send_raw(s, random_bytes(rng, 1 + rng() % 200));
  }
}

// An unauthenticated peer gets the server's opening nonce and a refusal, never
// an address: each message is an Open (44 bytes) or an Answer that refuses.
std::string leaked(const std::vector<Bytes>& got) {
  for (const Bytes& m : got) {
    try {
      bootstrap::parse_open(m, "server");
      continue;
    } catch (const Error&) {
    }
    bootstrap::Answer a = bootstrap::parse_answer(m, "server");
    if (a.ok) return "an accepting answer with the server's address";
  }
  return {};
}

// Cases 1, 4 and 7 of the issue: malformed UCX addresses, made-up and wrong
// proofs, huge lengths and random bytes, hundreds of times while a worker
// trains: the server refuses each before UCX sees a byte, and the worker's
// SGD is exact.
TEST_P(PsSecurityTest, PeersWithoutTheSecretReachNothingWhileAWorkerTrainsExactly) {
  ServerOptions o;
  o.exit_when_done = false;  // attacks go on after the worker left
  ServerGroup servers(1, 1, fault_config(GetParam()), o);
  const std::string address = servers.addresses();
  PeerProcess honest("steady_worker", GetParam(), 0, 5, {address, "0"});
  std::mt19937_64 rng(7);
  int attacks = 0;
  while (attacks < 300 || honest.running()) {
    std::string what = leaked(attack(address, attacks, rng));
    ASSERT_TRUE(what.empty()) << "attack " << attacks << " (kind " << attacks % 5 << ") got " << what;
    ++attacks;
    ASSERT_LT(attacks, 100000) << "the honest worker never finished";
  }
  EXPECT_EQ(honest.wait(60s), 0) << "the honest worker's exact SGD was disturbed";
  servers.stop();
  ServerStats s = servers.server(0).stats();
  EXPECT_EQ(s.applied_per_worker[0], kSteadyPushes);
  EXPECT_EQ(s.pushes, kSteadyPushes) << "a push came from someone else";
  EXPECT_EQ(s.rejected, 0u);
}

// The local addresses this process listens on over TCP (/proc/net/tcp{,6}
// entries in state LISTEN whose socket is one of this process's files).
std::vector<std::string> own_listening_addresses() {
  std::set<std::string> mine;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(fd.path(), ec).string();
    if (!ec && target.rfind("socket:[", 0) == 0) mine.insert(target.substr(8, target.size() - 9));
  }
  std::vector<std::string> out;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      f >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      if (state == "0A" && mine.count(inode)) out.push_back(local);
    }
  }
  return out;
}

// Hex of /proc/net/tcp: 0100007F is 127.0.0.1; ::1 is 15 zero words then 01000000.
bool is_loopback_hex(const std::string& local) {
  const std::string host = local.substr(0, local.find(':'));
  if (host.size() == 8) return host.substr(6, 2) == "7F";
  return host == "00000000000000000000000001000000";
}

// UCX's tcp transport listens on every device it uses and takes connections
// without rdmaps' handshake: a server on loopback, and its workers, listened
// on every interface of the host as well.
TEST(PsSecurity, AJobOnLoopbackListensOnLoopbackOnly) {
  const char* devices = std::getenv("UCX_NET_DEVICES");  // the tests' own (lo) would hide it
  const std::string saved = devices ? devices : "";
  unsetenv("UCX_NET_DEVICES");
  {
    Config c = sgd_config(transport::TransportKind::kTcp, 0.1f, 1024);
    ServerGroup servers(1, 1, c);
    Client client(local_worker_options(servers.addresses(), c));
    client.declare("w", 100);
    client.connect();
    const auto listening = own_listening_addresses();
    EXPECT_FALSE(listening.empty());
    for (const auto& local : listening) EXPECT_TRUE(is_loopback_hex(local)) << "listening on " << local;
  }
  if (devices) setenv("UCX_NET_DEVICES", saved.c_str(), 1);
}

// A proof is bound to both sides' fresh nonces: one made for an earlier
// connection, with the right secret, is refused on the next.
TEST(PsSecurity, AProofFromAnEarlierConnectionIsRefused) {
  Config c = fault_config(transport::TransportKind::kTcp);
  ServerGroup servers(1, 1, c);
  const std::string secret = test_secret();
  std::mt19937_64 rng(3);
  const Bytes address = random_bytes(rng, 200);  // never reaches UCX: the proof is refused first
  auto deadline = Clock::now() + 5s;
  bootstrap::Open open{bootstrap::kHasSecret, transport::random_nonce()};
  bootstrap::Proven captured;
  {
    TcpSocket first = raw_connect(servers.addresses());
    first.send_message(bootstrap::encode(open), deadline, "server");
    auto theirs = bootstrap::parse_open(first.recv_message(deadline, "server", 64), "server");
    captured.address = address;
    captured.proof = transport::prove(secret, "rdmaps bootstrap client", open.nonce, theirs.nonce, address, {});
  }  // closed without sending it: an eavesdropper's capture
  TcpSocket second = raw_connect(servers.addresses());
  second.send_message(bootstrap::encode(open), deadline, "server");
  bootstrap::parse_open(second.recv_message(deadline, "server", 64), "server");
  second.send_message(bootstrap::encode(captured), deadline, "server");
  auto answer = bootstrap::parse_answer(second.recv_message(deadline, "server", 1 << 20), "server");
  EXPECT_FALSE(answer.ok) << "a replayed proof was accepted";
  EXPECT_EQ(answer.code, Errc::kPermissionDenied);
  EXPECT_NE(answer.reason.find("wrong shared secret"), std::string::npos) << answer.reason;
  servers.stop();
}

Errc connect_error(const std::string& servers, const std::string& secret, std::string* what) {
  ClientOptions o;
  o.servers = {servers};
  o.config = fault_config(transport::TransportKind::kTcp);
  o.config.secret = secret;
  o.timeout = 10s;
  return error_code_of(
      [&] {
        Client client(o);
        client.declare("w", kFaultFloats);
        client.connect();
      },
      what);
}

// Both sides must hold the same secret, and each failure says which way it failed.
TEST(PsSecurity, SecretsMustAgreeAndEachMismatchSaysWhy) {
  ServerGroup servers(1, 1, fault_config(transport::TransportKind::kTcp));
  std::string what;
  EXPECT_EQ(connect_error(servers.addresses(), "", &what), Errc::kPermissionDenied);
  EXPECT_NE(what.find("requires a shared secret"), std::string::npos) << what;
  EXPECT_EQ(connect_error(servers.addresses(), "a different secret, long enough", &what), Errc::kPermissionDenied);
  EXPECT_NE(what.find("wrong shared secret"), std::string::npos) << what;
  servers.stop();

  // Off loopback, no secret means no server, unless --insecure.
  ServerOptions open;
  open.listen = "0.0.0.0:0";
  open.config = fault_config(transport::TransportKind::kTcp);
  EXPECT_EQ(error_code_of([&] { Server s(open); }, &what), Errc::kInvalidArgument);
  EXPECT_NE(what.find("--insecure"), std::string::npos) << what;
  open.insecure = true;
  Server insecure(open);
  std::thread serving([&] { insecure.run(); });
  const std::string port = insecure.address().substr(insecure.address().rfind(':'));
  EXPECT_EQ(connect_error("127.0.0.1" + port, test_secret(), &what), Errc::kPermissionDenied);
  EXPECT_NE(what.find("does not authenticate"), std::string::npos) << what;
  insecure.stop();
  serving.join();
}

// An authenticated peer speaking the set-up protocol by hand.
struct SetupPeer {
  SetupPeer(transport::TransportKind kind, const std::string& address)
      : context(transport::create_context({.transport = kind, .secret = test_secret()})),
        ep(context->connect(SockAddr::parse(address), kSetupTimeout)),
        address(address) {}
  ps::Welcome hello(uint32_t worker, std::vector<ps::TensorDecl> tensors) {
    ps::Hello h;
    h.worker = worker;
    h.staleness = fault_config(transport::TransportKind::kTcp).staleness;  // as the honest worker's
    h.tensors = std::move(tensors);
    ep->send_control(ps::encode(h), kSetupTimeout);
    return ps::decode_welcome(ep->recv_control(kSetupTimeout), address);
  }
  std::unique_ptr<transport::Context> context;
  std::unique_ptr<transport::Endpoint> ep;
  std::string address;
};

// A job of one worker ends when that worker dies (rdmaps-server's default),
// unless another process of its id is on its way. One whose Hello was held
// while the dead one's connections still looked live was welcomed to lanes
// that had ended the job meanwhile, and failed at their handshake. It trains.
TEST_P(PsSecurityTest, AWorkerHeldWhileItsPredecessorDiesTrainsThoughItWasTheJobsLast) {
  // The kill waits for the server to say it holds the Hello: a fixed 500 ms was
  // shorter than the next process's start under ASan, and the job then ended,
  // rightly, with its last worker (session 50); its connect retried till the test's end.
  LogWatch log;
  Config c = fault_config(GetParam());
  c.server_threads = 2;
  ServerGroup servers(1, 1, c);
  PeerProcess stopped("idle_worker", GetParam(), 0, 1, {servers.addresses(), "0"});
  for (auto until = Clock::now() + 30s; servers.server(0).stats().pulls < 2 && Clock::now() < until;)
    std::this_thread::sleep_for(10ms);
  ASSERT_GE(servers.server(0).stats().pulls, 2u) << "the first worker did not train";
  const uint64_t first = servers.server(0).stats().applied_per_worker[0];  // its one push, pulled after
  ASSERT_EQ(kill(stopped.pid(), SIGSTOP), 0);  // its connections stay open: the next Hello of its id is held
  PeerProcess next("steady_worker", GetParam(), 0, 1, {servers.addresses(), "0"});
  ASSERT_TRUE(log.wait_for("(worker 0) is held", 30s)) << "the next worker's Hello was not held";
  kill(stopped.pid(), SIGKILL);  // the lanes drop it: the job's last worker, but for the one held
  EXPECT_EQ(next.wait(20s), 0) << "the held worker did not train (welcomed to lanes that had ended the job?)";
  servers.join();
  EXPECT_EQ(servers.server(0).stats().applied_per_worker[0], first + kSteadyPushes);
}

// Cases 3 and 6: a first hello declaring 2^40 floats is refused before
// anything is sized from it, and neither it nor another refused hello fixes
// the table: the honest worker, declaring its own, trains exactly.
TEST_P(PsSecurityTest, OversizedAndRefusedHellosFixNothing) {
  ServerOptions o;
  o.max_bytes = 64 << 20;
  ServerGroup servers(1, 1, fault_config(GetParam()), o);
  {
    SetupPeer peer(GetParam(), servers.addresses());
    ps::Welcome w = peer.hello(0, {{"huge", 1ull << 40}});
    EXPECT_FALSE(w.accepted);
    EXPECT_NE(w.reason.find("--max-bytes"), std::string::npos) << w.reason;
  }
  {
    SetupPeer peer(GetParam(), servers.addresses());
    ps::Welcome w = peer.hello(7, {{"other", 100}});  // worker 7 of 1: refused
    EXPECT_FALSE(w.accepted);
  }
  PeerProcess honest("steady_worker", GetParam(), 0, 5, {servers.addresses(), "0"});
  EXPECT_EQ(honest.wait(60s), 0) << "a refused hello's table or rule was kept";
  servers.join();
  EXPECT_EQ(servers.server(0).stats().applied_per_worker[0], kSteadyPushes);
}

// Case 5: hundreds of connections that send nothing or half a message, to the
// listen port and to every lane, authenticated or not, held open while a
// worker joins and trains: it is admitted at once and trains exactly, and no
// lane spent more than a fraction of the handshake deadline on them.
TEST_P(PsSecurityTest, SilentAndHalfOpenConnectionsStallNobody) {
  ServerGroup servers(1, 2, fault_config(GetParam()));
  const std::string address = servers.addresses();
  // Worker 1 is admitted by hand, to learn the lanes' ports; it never connects to them.
  SetupPeer scout(GetParam(), address);
  ps::Welcome welcome = scout.hello(1, {{"w", kFaultFloats}});
  ASSERT_TRUE(welcome.accepted) << welcome.reason;
  std::vector<TcpSocket> idle;
  std::vector<std::unique_ptr<SetupPeer>> silent;  // authenticated, never send their first message
  auto half_open = [&](const std::string& to) {
    idle.push_back(raw_connect(to));
    bootstrap::Open open{bootstrap::kHasSecret, transport::random_nonce()};
    Bytes m = bootstrap::encode(open);
    uint32_t n = static_cast<uint32_t>(m.size());
    Bytes framed(reinterpret_cast<uint8_t*>(&n), reinterpret_cast<uint8_t*>(&n) + 4);
    framed.insert(framed.end(), m.begin(), m.begin() + 10);  // half an opening
    send_raw(idle.back(), framed);
  };
  for (int i = 0; i < 100; ++i) idle.push_back(raw_connect(address));
  for (int i = 0; i < 50; ++i) half_open(address);
  for (int i = 0; i < 10; ++i) silent.push_back(std::make_unique<SetupPeer>(GetParam(), address));
  for (const ps::LaneInfo& lane : welcome.lanes) {
    const std::string to = SockAddr::parse(address).with_port(static_cast<uint16_t>(lane.port)).to_string();
    for (int i = 0; i < 20; ++i) idle.push_back(raw_connect(to));
    for (int i = 0; i < 10; ++i) half_open(to);
    for (int i = 0; i < 5; ++i) silent.push_back(std::make_unique<SetupPeer>(GetParam(), to));
  }
  PeerProcess honest("steady_worker", GetParam(), 0, 5, {address, "0"});
  EXPECT_EQ(honest.wait(60s), 0) << "the honest worker did not get in or was disturbed";
  ServerStats s = servers.server(0).stats();
  EXPECT_EQ(s.applied_per_worker[0], kSteadyPushes);
  // Before: each silent peer held the loop for the 10 s handshake timeout (a
  // loose bound: on a loaded machine a lane is preempted for a while).
  EXPECT_LT(s.longest_setup_pause_us, 5'000'000u) << "a lane waited on a connection";
  servers.stop();
}

// More authenticated but silent peers than may wait for their first message
// (ps::kMaxPendingPeers): each new one makes the oldest go. A full table
// stopped the listener being polled: the next handshake (here the 257th
// silent peer's, then the honest worker's) waited until silent ones expired.
TEST_P(PsSecurityTest, MoreSilentPeersThanWaitForTheirHelloKeepNobodyOut) {
  ServerGroup servers(1, 1, fault_config(GetParam()));
  const std::string address = servers.addresses();
  auto context = transport::create_context({.transport = GetParam(), .secret = test_secret()});
  std::vector<std::unique_ptr<transport::Endpoint>> silent;
  const auto first = Clock::now();
  for (size_t i = 0; i < ps::kMaxPendingPeers + 44; ++i) {
    // Before the first silent peer's 5 s for a first message end: no room is
    // made by a deadline, so the test tells (1 s of margin).
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(first + 4s - Clock::now());
    if (left <= 0ms) GTEST_SKIP() << i << " connections took 4 s: too slow here to tell a full table from an expiry";
    try {
      silent.push_back(context->connect(SockAddr::parse(address), left));
    } catch (const Error& e) {
      // The last connect may take what was left of the 4 s: slow, not wrong.
      if (e.code() == Errc::kTimeout && Clock::now() >= first + 4s)
        GTEST_SKIP() << i << " connections took 4 s: too slow here to tell a full table from an expiry";
      FAIL() << "silent peer " << i << " could not connect: " << e.what();
    }
  }
  PeerProcess honest("steady_worker", GetParam(), 0, 5, {address, "0"});
  EXPECT_EQ(honest.wait(60s), 0) << "the honest worker did not get in or was disturbed";
  EXPECT_EQ(servers.server(0).stats().applied_per_worker[0], kSteadyPushes);
  servers.stop();
}

// A flood of Hellos that are refused is said in at most 10 lines a second,
// the rest counted in one line once the second is over: each refusal was a
// line of its own, and a loop of bad clients flooded the server's log.
TEST_P(PsSecurityTest, AFloodOfRefusedHellosIsLoggedInTenLinesASecond) {
  ServerGroup servers(1, 1, fault_config(GetParam()));
  OutputCapture log;
  auto refused = [&] {
    SetupPeer peer(GetParam(), servers.addresses());
    EXPECT_FALSE(peer.hello(7, {{"w", kFaultFloats}}).accepted);  // worker 7 of a job of 1
  };
  const auto start = Clock::now();
  for (int i = 0; i < 30; ++i) refused();
  const auto seconds = std::chrono::ceil<std::chrono::seconds>(Clock::now() - start).count();
  std::this_thread::sleep_for(1100ms);
  refused();  // the count of the second before was said once it was over
  const std::string said = log.end();
  size_t lines = 0, counted = 0;
  for (size_t at = 0; (at = said.find("rdmaps-server: refused ", at)) != std::string::npos; ++at) ++lines;
  const std::string more = " more connections refused or closed within that second";
  for (size_t at = 0; (at = said.find(more, at)) != std::string::npos; ++at)
    counted += std::stoul(said.substr(said.rfind(' ', at - 1) + 1));
  EXPECT_LE(lines, 10u * static_cast<size_t>(seconds) + 1) << "in " << seconds << " s:\n" << said;
  EXPECT_EQ(lines + counted, 31u) << "every refusal logged or counted:\n" << said;
  servers.stop();
}

// Case 2, what can be checked outside UCX: an admitted peer's region
// descriptor (receive or landing region) that is truncated, oversized or of
// the wrong kind is refused by the lane, which goes on serving.
TEST_P(PsSecurityTest, MalformedRegionDescriptorsAreRefusedByTheLane) {
  ServerGroup servers(1, 2, fault_config(GetParam()));
  const std::string address = servers.addresses();
  SetupPeer peer(GetParam(), address);
  ps::Welcome welcome = peer.hello(1, {{"w", kFaultFloats}});
  ASSERT_TRUE(welcome.accepted) << welcome.reason;
  auto region = peer.context->allocate(1 << 16, Access::kRemoteWrite);
  Bytes good = region->descriptor(Access::kRemoteWrite).serialize();
  Bytes truncated(good.begin(), good.end() - 5), longer = good, wrong_kind = good;
  longer.resize(good.size() + 1000, 0xee);
  wrong_kind[0] ^= 0xff;  // not a region descriptor's magic
  const std::string lane0 =
      SockAddr::parse(address).with_port(static_cast<uint16_t>(welcome.lanes.at(0).port)).to_string();
  for (const Bytes& bad : {truncated, longer, wrong_kind, Bytes{}}) {
    SetupPeer lane(GetParam(), lane0);
    lane.ep->send_control(ps::encode(ps::LaneHello{1, welcome.token, 0, bad, {}}), kSetupTimeout);
    ps::LaneWelcome w = ps::decode_lane_welcome(lane.ep->recv_control(kSetupTimeout), lane0);
    EXPECT_FALSE(w.accepted);
    EXPECT_NE(w.reason.find("region descriptor"), std::string::npos) << w.reason;
  }
  // Well framed, but its packed key's memory-domain map names every domain
  // and holds none of their keys: UCX's unpack takes no length, and read up
  // to 16 KiB past the 9 bytes.
  {
    transport::RegionDescriptor hollow = transport::RegionDescriptor::parse(good, "the test");
    hollow.packed_key.assign(9, 0);
    std::fill_n(hollow.packed_key.begin(), 8, 0xff);
    SetupPeer lane(GetParam(), lane0);
    lane.ep->send_control(ps::encode(ps::LaneHello{1, welcome.token, 0, hollow.serialize(), {}}), kSetupTimeout);
    ps::LaneWelcome w = ps::decode_lane_welcome(lane.ep->recv_control(kSetupTimeout), lane0);
    EXPECT_FALSE(w.accepted);
    EXPECT_NE(w.reason.find("key"), std::string::npos) << w.reason;
  }
  // On the put path the lane also reads landing regions: a malformed one, or
  // one granting no write, is refused by name with a good receive region.
  if (welcome.push_path == static_cast<uint32_t>(PushPath::kPut)) {
    auto readable = peer.context->allocate(1 << 12, Access::kRemoteReadWrite);
    const std::vector<std::pair<Bytes, std::string>> landings = {
        {truncated, "landing region 1"},
        {wrong_kind, "landing region 1"},
        {readable->descriptor(Access::kRemoteRead).serialize(), "landing region 1 grants no remote write"}};
    for (const auto& [bad, named] : landings) {
      SetupPeer lane(GetParam(), lane0);
      lane.ep->send_control(ps::encode(ps::LaneHello{1, welcome.token, 0, good, {good, bad}}), kSetupTimeout);
      ps::LaneWelcome w = ps::decode_lane_welcome(lane.ep->recv_control(kSetupTimeout), lane0);
      EXPECT_FALSE(w.accepted);
      EXPECT_NE(w.reason.find(named), std::string::npos) << w.reason;
    }
  }
  PeerProcess honest("steady_worker", GetParam(), 0, 5, {address, "0"});
  EXPECT_EQ(honest.wait(60s), 0);
  servers.stop();
}

RDMAPS_INSTANTIATE_OVER_TRANSPORTS(PsSecurityTest);

}  // namespace
}  // namespace rdmaps::test
