// Faults: malformed inbox contents are rejected and counted with the peer
// named while the other workers keep training; a dead worker is dropped from
// the clock and may rejoin.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "math/bf16.h"
#include "src/ps/am_ids.h"
#include "src/ps/protocol.h"
#include "src/ps/write_back.h"
#include "tests/common/http_get.h"
#include "tests/common/log_watch.h"
#include "tests/common/output_capture.h"
#include "tests/common/own_tcp_sockets.h"
#include "tests/common/sanitizers.h"
#include "tests/common/scoped_file_limit.h"
#include "tests/ps/fixture.h"
#include "tests/transport/fixture.h"
#include "transport/bootstrap.h"
#include "transport/file_limit.h"
#include "transport/tcp_socket.h"

namespace rdmaps::test {
namespace {

class PsFaultTest : public PsTest {};
using Clock = std::chrono::steady_clock;
namespace bootstrap = transport::bootstrap;

// The malformed messages a rogue worker writes, each with a correct doorbell.
enum Bad {
  kBadMagic,
  kOtherWorker,
  kBadShard,
  kOversize,
  kStaleSeq,
  kNaN,
  kVersionAhead,
  kBadType,
  kBadRate,
  kBadLanding,      // a landing region whose descriptor is not one
  kLandingSkipped,  // landing region 3 offered when 1 is due
  kBadCount
};

TEST_P(PsFaultTest, MalformedInboxContentsAreRejectedAndOthersKeepTraining) {
  Config c = fault_config(GetParam());
  ServerGroup servers(1, 2, c);
  PeerProcess good("steady_worker", GetParam(), 0, 5, {servers.addresses(), "0"});
  PeerProcess rogue("rogue_worker", GetParam(), 0, 6, {servers.addresses(), "1"});
  EXPECT_EQ(rogue.wait(120s), 0);
  EXPECT_EQ(good.wait(120s), 0) << "the well-behaved worker's training was disturbed";
  servers.join();
  auto s = servers.server(0).stats();
  EXPECT_EQ(s.rejected_per_worker[1], static_cast<uint64_t>(kBadCount) + 1) << "every malformed message counted";
  EXPECT_EQ(s.rejected_per_worker[0], 0u);
  EXPECT_EQ(s.applied_per_worker[1], 0u) << "a malformed push was applied";
  // A landing region refused counts as landing, as its log line says (it was counted as a header); one
  // whose number skips is refused for its header's field.
  uint64_t landing = 0;
  for (const auto& [reason, count] : s.rejected_by_reason)
    if (reason == "landing") landing = count;
  EXPECT_EQ(landing, 1u);
}

// Trains with exact SGD from known values (extra[0] servers, extra[1] worker
// id): any rogue message applied would change the parameters away from the
// reference. Shared by the security tests.
RDMAPS_TEST_PEER(steady_worker) {
  Config c = fault_config(args.transport);
  Client client(worker_options(args, c));
  client.declare("w", kFaultFloats);
  client.connect();
  std::vector<float> w(kFaultFloats), ref(kFaultFloats, 1.0f), g(kFaultFloats);
  client.init("w", ref);
  for (int step = 0; step < kSteadySteps; ++step) {
    client.pull("w", w);
    for (size_t i = 0; i < kFaultFloats; ++i) g[i] = 0.25f * w[i] + 0.001f * static_cast<float>(step);
    client.push("w", g);
    for (size_t i = 0; i < kFaultFloats; ++i) ref[i] = ref[i] - c.learning_rate * g[i];
    client.clock();
    std::this_thread::sleep_for(2ms);
  }
  client.pull("w", w);
  return std::memcmp(w.data(), ref.data(), kFaultFloats * 4) == 0 ? 0 : 1;
}

// A worker that speaks the wire protocol directly through the transport (put
// path), to send what the Client never would. It joins every lane of the
// server and writes into its inbox on lane 0.
struct RawWorker {
  /// `landing_floats`: that many floats of its own memory offered as landing region 1 (put path).
  RawWorker(const PeerArgs& args, uint32_t worker, uint64_t floats, uint32_t shards, PushPath path = PushPath::kPut,
            uint64_t landing_floats = 0)
      : context(transport::create_context({.transport = args.transport, .secret = test_secret()})),
        address(split(args.extra.at(0), ',').at(0)),
        layout{0, shards, floats},
        slot{kFaultShard * sizeof(float)},
        ep(context->connect(transport::SockAddr::parse(address), kSetupTimeout)) {
    ps::Hello hello;
    hello.worker = worker;
    hello.staleness = fault_config(args.transport).staleness;  // as the honest workers'
    hello.push_path = static_cast<uint32_t>(path);
    hello.tensors = {{"w", floats}};
    ep->send_control(encode(hello), kSetupTimeout);
    welcome = ps::decode_welcome(ep->recv_control(kSetupTimeout), address);
    if (!welcome.accepted) return;
    layout.lanes = welcome.lanes.size();
    receive = context->allocate(layout.bytes(), Access::kRemoteWrite);
    std::memset(receive->data(), 0, receive->size());
    ps::LaneHello lane_hello{worker, welcome.token, 0, receive->descriptor(Access::kRemoteWrite).serialize(), {}};
    if (landing_floats) {
      landing_memory.assign(landing_floats, std::nanf(""));
      landing = context->register_memory(landing_memory.data(), landing_floats * 4, Access::kRemoteWrite);
      lane_hello.landing_regions.push_back(landing->descriptor(Access::kRemoteWrite).serialize());
    }
    for (const auto& info : welcome.lanes) {
      lanes.push_back(context->connect(transport::SockAddr::parse(address).with_port(info.port), kSetupTimeout));
      lanes.back()->send_control(encode(lane_hello), kSetupTimeout);
      auto lw = ps::decode_lane_welcome(lanes.back()->recv_control(kSetupTimeout), address);
      if (!lw.accepted) throw std::runtime_error("a lane refused the raw worker: " + lw.reason);
      if (!inbox) inbox = lanes.back()->import(transport::RegionDescriptor::parse(lw.inbox_region, address));
    }
    ep = std::move(lanes.front());  // lane 0 carries what this worker writes
    staging = context->allocate(slot.slot_bytes(), Access::kNone);
  }
  /// Writes header, payload and doorbell into the slot of `seq`; flushed.
  void write(const ps::SlotHeader& h, uint64_t seq, uint64_t doorbell, float fill) {
    auto* mem = static_cast<uint8_t*>(staging->data());
    std::memcpy(mem, &h, sizeof(h));
    auto* payload = reinterpret_cast<float*>(mem + slot.payload_offset());
    for (size_t i = 0; i < kFaultShard; ++i) payload[i] = fill;
    std::memcpy(mem + slot.doorbell_offset(), &doorbell, 8);
    uint64_t base = ((seq - 1) % welcome.inbox_slots) * slot.slot_bytes();
    ep->put(mem, slot.doorbell_offset(), *inbox, base, staging.get()).wait_for(kSetupTimeout);
    ep->fence();
    ep->put(mem + slot.doorbell_offset(), 8, *inbox, base + slot.doorbell_offset(), staging.get())
        .wait_for(kSetupTimeout);
    ep->flush().wait_for(kSetupTimeout);
  }
  // UCX 1.13 aborts when an endpoint is closed with a wireup reply still
  // queued on it (an over-strict assertion, openucx/ucx#8175, seen once with
  // the server in this process): what the server's lanes sent is answered first.
  ~RawWorker() {
    for (auto until = Clock::now() + 200ms; Clock::now() < until;) context->progress();
  }
  RawWorker(const RawWorker&) = delete;
  RawWorker& operator=(const RawWorker&) = delete;
  /// Lane 0's mailbox words: [0] consumed_seq, [4] rejected.
  const std::atomic<uint64_t>* mailbox() const { return static_cast<const std::atomic<uint64_t>*>(receive->data()); }

  // Declared so that endpoints close before the regions the server writes
  // into are freed (a put landing in freed memory crashes), and the context goes last.
  std::unique_ptr<transport::Context> context;
  std::string address;
  ps::ReceiveLayout layout;
  ps::SlotLayout slot;
  std::vector<float> landing_memory;
  std::unique_ptr<transport::Region> receive, staging, landing;
  ps::Welcome welcome;
  std::unique_ptr<transport::Endpoint> ep;
  std::vector<std::unique_ptr<transport::Endpoint>> lanes;  // lanes[0] moved into ep
  std::unique_ptr<transport::RemoteRegion> inbox;
};

RDMAPS_TEST_PEER(rogue_worker) {
  using namespace ps;
  RawWorker raw(args, 1, kFaultFloats, 3);  // 5000 floats / 2048 per shard
  if (!raw.welcome.accepted) return 10;
  auto* mailbox = raw.mailbox();
  std::mt19937_64 rng(args.seed);

  uint64_t seq = 1;
  auto write = [&](const SlotHeader& h, uint64_t doorbell, float fill) {
    raw.write(h, seq, doorbell, fill);
    // The server consumes (and rejects) each message and returns the credit.
    auto deadline = std::chrono::steady_clock::now() + kSetupTimeout;
    while (mailbox[0].load() < seq && std::chrono::steady_clock::now() < deadline) raw.context->progress();
    if (mailbox[0].load() < seq) throw std::runtime_error("no credit back for message " + std::to_string(seq));
    ++seq;
  };
  auto header = [&](MsgType type) {
    SlotHeader h{};
    h.magic = kSlotMagic;
    h.type = static_cast<uint16_t>(type);
    h.worker = 1;
    h.seq = seq;
    h.length = 16;
    return h;
  };
  for (int bad = 0; bad < kBadCount; ++bad) {
    SlotHeader h = header(MsgType::kPush);
    float fill = 0.5f;
    switch (bad) {
      case kBadMagic:
        for (auto* p = reinterpret_cast<uint64_t*>(&h); p < reinterpret_cast<uint64_t*>(&h + 1); ++p) *p = rng();
        break;
      case kOtherWorker:
        h.worker = 0;
        break;
      case kBadShard:
        h.shard = 9999;
        break;
      case kOversize:
        h.length = kFaultShard * 4;
        break;
      case kStaleSeq:
        h.seq = seq - 1;
        break;
      case kNaN:
        fill = std::nanf("");
        break;
      case kVersionAhead:
        h.base_version = 1u << 30;
        break;
      case kBadType:
        h.type = 77;
        break;
      case kBadRate:
        h.learning_rate = -std::numeric_limits<float>::infinity();
        break;
      case kBadLanding:
        h.type = static_cast<uint16_t>(MsgType::kLanding);
        h.landing = 1;
        h.length = 64;  // bytes of 0.5f: no descriptor magic
        break;
      case kLandingSkipped:
        h.type = static_cast<uint16_t>(MsgType::kLanding);
        h.landing = 3;
        h.length = 64;
        break;
    }
    write(h, seq, fill);
  }
  // A doorbell that does not match the sequence due: rejected, slot consumed.
  write(header(MsgType::kPush), seq + 5, 0.5f);
  if (mailbox[4].load() != kBadCount + 1) {  // Mailbox::rejected
    std::fprintf(stderr, "rogue: mailbox counts %llu rejections\n", static_cast<unsigned long long>(mailbox[4].load()));
    return 11;
  }
  SlotHeader bye = header(MsgType::kBye);
  write(bye, seq, 0);  // acknowledged like any message (docs/protocol.md "Dead and leaving workers")
  return 0;
}

// A piece that continues a step counts no new version: its staleness is
// version - 1 - base. One whose base is the version its own step's earlier
// piece made (only a crafted header: a pull ends the step) made that
// negative, wrapped to 2^64-1, and was applied as if that stale; it is
// rejected now, while an honest piece of the same step is taken at 0.
TEST_P(PsFaultTest, APieceOfAStepBasedOnTheVersionItsStepMadeIsRejected) {
  Config c = fault_config(GetParam());
  ServerOptions serve_on;
  serve_on.exit_when_done = false;
  serve_on.log_connections = false;
  ServerGroup servers(1, 1, c, serve_on);
  RawWorker raw(PeerArgs{GetParam(), 0, 0, {servers.addresses()}}, 0, kFaultFloats, 3);
  ASSERT_TRUE(raw.welcome.accepted) << raw.welcome.reason;
  uint64_t seq = 1;
  auto push = [&](uint32_t offset, uint64_t base_version) {
    ps::SlotHeader h{};
    h.magic = ps::kSlotMagic;
    h.type = static_cast<uint16_t>(ps::MsgType::kPush);
    h.seq = seq;
    h.offset = offset;
    h.length = 16;
    h.base_version = base_version;
    raw.write(h, seq, seq, 0.5f);
    for (auto until = Clock::now() + kSetupTimeout; raw.mailbox()[0].load() < seq && Clock::now() < until;)
      raw.context->progress();
    ASSERT_EQ(raw.mailbox()[0].load(), seq) << "no credit back for message " << seq;
    ++seq;
  };
  push(0, 0);   // shard 0 at version 1
  push(16, 1);  // the same step, based on the version it made itself
  push(32, 0);  // the same step, honestly: 0 stale
  const ServerStats s = servers.server(0).stats();
  EXPECT_EQ(s.rejected_per_worker[0], 1u);
  EXPECT_EQ(raw.mailbox()[4].load(), 1u) << "the worker was not told";  // Mailbox::rejected
  EXPECT_EQ(s.applied_per_worker[0], 2u);
  ASSERT_FALSE(s.staleness.empty());
  EXPECT_EQ(s.staleness[0], 2u);
  EXPECT_EQ(s.staleness.back(), 0u) << "a push counted as stale as the histogram goes";
}

// A worker that never started (or ended before it connected) held the SSP
// clock: the others' timeout said "waiting for the slowest worker", not which.
TEST_P(PsFaultTest, AnSspWaitThatTimesOutNamesTheWorkerHoldingTheClock) {
  Config c = config();
  c.staleness = 0;
  c.shard_floats = 1024;
  auto clock_error = [](Client& client) {
    try {
      client.clock();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  {
    ServerGroup servers(1, 2, c);
    ClientOptions o = local_worker_options(servers.addresses(), c);
    o.timeout = 1500ms;
    Client first(o);
    first.declare("w", 1000);
    first.connect();
    const std::string what = clock_error(first);
    EXPECT_NE(what.find("waiting for the slowest worker to reach clock 1"), std::string::npos) << what;
    EXPECT_NE(what.find("; worker 1 holds it: it never reached this server lane"), std::string::npos) << what;
  }
  // Connected, and not clocking: named once the clock held a second.
  ServerGroup servers(1, 2, c);
  ClientOptions o = local_worker_options(servers.addresses(), c);
  o.timeout = 3s;
  ClientOptions idle_options = o;
  idle_options.worker = 1;
  Client idle(idle_options);
  idle.declare("w", 1000);
  idle.connect();
  Client first(o);
  first.declare("w", 1000);
  first.connect();
  const std::string what = clock_error(first);
  EXPECT_NE(what.find("; worker 1 holds it, at clock 0"), std::string::npos) << what;
}

TEST_P(PsFaultTest, DeadWorkerIsDroppedFromTheClockAndMayRejoin) {
  Config c = config();
  c.staleness = 0;  // BSP: a dead worker not dropped would block the others forever
  c.shard_floats = 1024;
  // Once the survivor left, every worker has left or died: a server that
  // exits when done would be gone before a slow-starting rejoin connects
  // (seen once under load: the rejoining worker waited out its 60 s).
  ServerOptions serve_on;
  serve_on.exit_when_done = false;
  ServerGroup servers(1, 2, c, serve_on);
  PeerProcess survivor("clocking_worker", GetParam(), 0, 1, {servers.addresses(), "0", "40", "0"});
  {
    PeerProcess victim("clocking_worker", GetParam(), 0, 2, {servers.addresses(), "1", "1000", "0"});
    // Killed while it trains, not before it connected.
    for (auto until = Clock::now() + 30s; servers.server(0).stats().applied_per_worker[1] == 0 && Clock::now() < until;)
      std::this_thread::sleep_for(10ms);
    victim.kill_now();
  }
  // Same worker id again: admitted at the current clock, trains under BSP.
  PeerProcess rejoined("clocking_worker", GetParam(), 0, 3, {servers.addresses(), "1", "5", "0"});
  EXPECT_EQ(rejoined.wait(60s), 0) << "the rejoining worker could not train";
  EXPECT_EQ(survivor.wait(60s), 0) << "the surviving worker was blocked by the dead one";
  EXPECT_EQ(servers.server(0).stats().workers_lost, 1u) << "the killed worker was not found dead";
}

// A lane polls a few workers' sockets per housekeeping round, in turn: a
// death is found whichever id died, past the first round's.
TEST_P(PsFaultTest, ADeadWorkerIsFoundWhateverItsIdAmongMany) {
  Config c = config();
  c.staleness = kInfiniteStaleness;
  c.shard_floats = 1024;
  constexpr uint32_t kWorkers = 3 * 32 + 5;  // a housekeeping round polls 32
  ServerGroup servers(1, kWorkers, c);
  {
    PeerProcess victim("clocking_worker", GetParam(), 0, 2,
                       {servers.addresses(), std::to_string(kWorkers - 1), "100000", "inf"});
    for (auto until = Clock::now() + 30s; servers.server(0).stats().pushes == 0 && Clock::now() < until;)
      std::this_thread::sleep_for(10ms);
    victim.kill_now();
  }
  auto until = Clock::now() + 10s;
  while (servers.server(0).stats().workers_lost == 0 && Clock::now() < until) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(servers.server(0).stats().workers_lost, 1u) << "worker " << kWorkers - 1 << " died unnoticed";
}

// Workers released by the same clock and leaving at once: their last pushes,
// clocks and goodbyes can land just after the server polled their inboxes and
// just before it sees their sockets close. Every push must still be applied
// and every leave counted as one, not as a death (before the server took in a
// closed worker's inbox, two of four such runs of rdmaps-train reported
// workers as dead with their goodbye unread).
TEST_P(PsFaultTest, WorkersLeavingTogetherLoseNoPushAndAreNotReportedDead) {
  Config c = config();
  c.staleness = 0;
  c.shard_floats = 1024;
  constexpr uint32_t kWorkers = 6;
  constexpr int kIterations = 4;
  // Rounds are chances to hit the race, which the optimized run takes. Under
  // AddressSanitizer the 20 rounds took 6x as long (65 s of CI's time over both
  // transports); a few cover the leave path's memory as well.
  constexpr int kRounds = kUnderSanitizer ? 4 : 20;
  ServerOptions serve_on;
  serve_on.exit_when_done = false;  // every round's workers leave; the next rejoin
  ServerGroup servers(1, kWorkers, c, serve_on);
  // What the servers and workers printed: a clean leave is no UCX error
  // (closing the endpoint of a worker that left printed "UCX ERROR ... error
  // during flush" some 30 times per run over tcp; transport/ucx/log_filter.h).
  OutputCapture printed;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<PeerProcess> workers;
    for (uint32_t w = 0; w < kWorkers; ++w)
      workers.emplace_back("clocking_worker", GetParam(), 0, 100 * round + w,
                           std::vector<std::string>{servers.addresses(), std::to_string(w), std::to_string(kIterations),
                                                    "0", "no-sleep"});
    for (auto& w : workers) ASSERT_EQ(w.wait(60s), 0) << "round " << round;
  }
  const std::string output = printed.end();
  EXPECT_EQ(output.find("UCX  ERROR"), std::string::npos) << "a clean leave printed UCX errors (above)";
  // A worker returns from leaving once the server acknowledged its goodbye:
  // by then every leave and every push is in the server's stats.
  const uint64_t expected_leaves = uint64_t{kWorkers} * kRounds;
  const ServerStats st = servers.server(0).stats();
  EXPECT_EQ(st.workers_lost, 0u) << "workers that said goodbye were reported dead";
  EXPECT_EQ(st.workers_left, expected_leaves);
  for (uint32_t w = 0; w < kWorkers; ++w)
    EXPECT_EQ(st.applied_per_worker[w], uint64_t{kRounds} * kIterations * 2) << "worker " << w << " (2 shards)";
}

// Leaving is a handshake: the worker returns from it only once the server
// acknowledged its goodbye, so nothing it pushed is still on its way (closing
// earlier let a tcp reset discard a last push, once in ~30 runs under load).
// Checked at once, with no wait: every push applied, the leave counted.
TEST_P(PsFaultTest, ALeavingWorkerReturnsOnceTheServerTookInAllItSent) {
  Config c = config();
  c.rule = UpdateRule::kDcAsgdAdaptive;  // the costliest apply: the server is still busy when the worker leaves
  constexpr size_t kFloats = size_t{1} << 22;
  constexpr int kPushes = 6;
  c.shard_floats = kFloats / 4;
  ServerGroup servers(1, 1, c);
  {
    Client client(local_worker_options(servers.addresses(), c));
    client.declare("w", kFloats);
    client.connect();
    std::vector<float> g(kFloats, 0.5f);
    for (int i = 0; i < kPushes; ++i) client.push("w", g);
  }
  const ServerStats st = servers.server(0).stats();
  EXPECT_EQ(st.applied_per_worker[0], uint64_t{kPushes} * 4) << "pieces applied when the worker returned";
  EXPECT_EQ(st.workers_left, 1u);
  EXPECT_EQ(st.workers_lost, 0u);
}

// A worker that dies right after asking for parameters four times can leave
// the server write-backs to a dead peer to wait on before it answers the next;
// the server must drop that worker and keep serving (it used to abort). The
// timing is the kernel's: about one run in eight hits the window here.
TEST_P(PsFaultTest, WorkersDyingWithWriteBacksInFlightAreDroppedWhileOthersTrain) {
  Config c = fault_config(GetParam());
  ServerGroup servers(1, 2, c);
  // An idle server answers the pulls at once, before it notices the death.
  for (int i = 0; i < 6; ++i) {
    PeerProcess victim("pull_then_die", GetParam(), 0, 10 + i, {servers.addresses()});
    EXPECT_EQ(victim.wait(60s), 0) << "victim " << i << " could not connect";
  }
  PeerProcess survivor("steady_worker", GetParam(), 0, 1, {servers.addresses(), "0"});
  EXPECT_EQ(survivor.wait(120s), 0) << "the server did not survive the dying workers";
}

RDMAPS_TEST_PEER(pull_then_die) {
  using namespace ps;
  RawWorker raw(args, 1, kFaultFloats, 3);
  if (!raw.welcome.accepted) return 10;
  for (uint64_t seq = 1; seq <= 4; ++seq) {  // every inbox slot
    SlotHeader h{};
    h.magic = kSlotMagic;
    h.type = static_cast<uint16_t>(MsgType::kPull);
    h.worker = 1;
    h.seq = seq;
    h.shard = 0;
    h.length = 3;  // every shard: the largest write-back
    raw.write(h, seq, seq, 0.0f);
  }
  std::_Exit(0);  // no goodbye, nothing received
}

RDMAPS_TEST_PEER(clocking_worker) {
  Config c;
  c.staleness = args.extra.at(3) == "inf" ? kInfiniteStaleness : std::stoull(args.extra.at(3));
  c.shard_floats = 1024;
  Client client(worker_options(args, c));
  client.declare("w", 2000);
  client.connect();
  std::vector<float> w(2000), g(2000, 0.01f);
  int iterations = std::stoi(args.extra.at(2));
  for (int i = 0; i < iterations; ++i) {
    client.pull("w", w);
    client.push("w", g);
    client.clock();
    if (args.extra.size() < 5) std::this_thread::sleep_for(10ms);
  }
  return 0;
}

// A worker of the servers at `addresses`, connected with one tensor of `floats`.
std::unique_ptr<Client> connect_worker(const std::string& addresses, const Config& c, uint32_t worker, uint32_t workers,
                                       uint64_t floats = 1000) {
  ClientOptions o;
  o.servers = split(addresses, ',');
  o.worker = worker;
  o.workers = workers;
  o.config = c;
  o.config.secret = test_secret();
  o.timeout = 20s;
  auto client = std::make_unique<Client>(o);
  client->declare("w", floats);
  client->connect();
  return client;
}

// Admits worker `worker` (a table of "w", `floats`) at the server at
// `address` and connects it to lane 0 alone, then leaves without a word:
// a worker killed between its lanes.
void connect_to_lane_zero_only_and_die(transport::TransportKind kind, const std::string& address, uint32_t worker,
                                       uint32_t workers, uint64_t staleness, uint64_t floats) {
  auto context = transport::create_context({.transport = kind, .secret = test_secret()});
  auto control = context->connect(transport::SockAddr::parse(address), kSetupTimeout);
  ps::Hello hello;
  hello.worker = worker;
  hello.workers = workers;
  hello.staleness = staleness;
  hello.push_path = static_cast<uint32_t>(PushPath::kPut);
  hello.tensors = {{"w", floats}};
  control->send_control(encode(hello), kSetupTimeout);
  const ps::Welcome welcome = ps::decode_welcome(control->recv_control(kSetupTimeout), address);
  ASSERT_TRUE(welcome.accepted) << welcome.reason;
  ASSERT_GE(welcome.lanes.size(), 2u) << "the server runs one lane: nothing to connect to but lane 0";
  size_t shards = 0;
  for (const auto& lane : welcome.lanes) shards += lane.shards;
  const ps::ReceiveLayout layout{welcome.lanes.size(), shards, floats};
  auto receive = context->allocate(layout.bytes(), Access::kRemoteWrite);
  auto lane0 = context->connect(transport::SockAddr::parse(address).with_port(welcome.lanes[0].port), kSetupTimeout);
  lane0->send_control(
      encode(ps::LaneHello{worker, welcome.token, 0, receive->descriptor(Access::kRemoteWrite).serialize(), {}}),
      kSetupTimeout);
  const ps::LaneWelcome lw = ps::decode_lane_welcome(lane0->recv_control(kSetupTimeout), address);
  ASSERT_TRUE(lw.accepted) << lw.reason;
  // The lane's first mailbox write lands while `receive` lives, and so does
  // anything that comes as lane 0 closes: over tcp such a put, taken in by
  // the context's last progress once `receive` was freed, crashed the test
  // process once (a loaded clean-clone run).
  for (auto until = Clock::now() + 200ms; Clock::now() < until;) context->progress();  // as ~RawWorker
  lane0.reset();
  for (auto until = Clock::now() + 200ms; Clock::now() < until;) context->progress();
}

// Worker 1 reaches lane 0 of server `died_at` of `server_count` (two lanes
// each) and dies; worker 0 clocks twice; worker 1 comes back and must start
// at clock 2 and have its next clocks taken by every lane of every server.
void rejoin_where_a_worker_died_half_connected(transport::TransportKind kind, uint32_t server_count, uint32_t died_at) {
  Config c;
  c.transport = transport::transport_name(kind);
  c.staleness = 2;
  c.shard_floats = 64;  // 256 floats a server: four shards, two lanes
  c.server_threads = 2;
  ServerOptions serve_on;
  serve_on.exit_when_done = false;
  serve_on.log_connections = false;
  ServerGroup servers(server_count, 2, c, serve_on);
  const uint64_t floats = 256 * server_count;
  connect_to_lane_zero_only_and_die(kind, servers.server(died_at).address(), 1, 2, c.staleness, floats);
  if (testing::Test::HasFatalFailure()) return;
  for (auto until = Clock::now() + 20s; servers.server(died_at).stats().workers_lost == 0 && Clock::now() < until;)
    std::this_thread::sleep_for(5ms);
  ASSERT_EQ(servers.server(died_at).stats().workers_lost, 1u) << "lane 0 never saw the half-connected worker go";
  auto first = connect_worker(servers.addresses(), c, 0, 2, floats);
  std::vector<float> g(floats, 0.01f);
  for (int i = 0; i < 2; ++i) {
    first->push("w", g);
    first->clock();
  }
  // Those clocks returned once posted (within the bound): the returning worker
  // starts where the lanes are, so lane 0 of the server it died at (whose
  // minimum its death freed; the count is its) is waited for (a loaded run).
  for (auto until = Clock::now() + 20s; servers.server(died_at).stats().clocks < 2 && Clock::now() < until;)
    std::this_thread::sleep_for(5ms);
  auto back = connect_worker(servers.addresses(), c, 1, 2, floats);
  EXPECT_EQ(back->clock_value(), 2u) << "not started where the slowest live worker is";
  try {
    for (int i = 0; i < 3; ++i) {
      back->push("w", g);
      back->clock();
      first->push("w", g);
      first->clock();
    }
  } catch (const Error& e) {
    ADD_FAILURE() << "the rejoined worker's clocks were not taken: " << e.what();
  }
  for (uint32_t s = 0; s < server_count; ++s)
    EXPECT_EQ(servers.server(s).stats().rejected_per_worker[1], 0u) << "server " << s << " rejected a clock";
}

// Both lanes of one server must start such a worker at the same clock.
// Lane 1 started it at 0 and lane 0 at 2; the worker goes on from the larger,
// so lane 1 refused its every clock ("clock 3 after 0") and, holding the
// clock at 0 for it, stalled the job (docs/protocol.md "Connection").
TEST_P(PsFaultTest, AWorkerThatDiedBetweenLanesRejoinsAtOneClockOnEveryLane) {
  rejoin_where_a_worker_died_half_connected(GetParam(), 1, 0);
}

// A worker that left in the middle of a step (pushed one tensor of a shard,
// no clock) and came back: its new process's first push, of another tensor
// of that shard, computed on nothing it pulled (version 0), is 1 stale. It
// was taken as more of the old process's step (staleness 0, and the shard's
// version not counted); a pull first would have ended that step.
TEST_P(PsFaultTest, AWorkerBackAfterLeavingMidStepStartsAStepOfItsOwn) {
  Config c = fault_config(GetParam());
  ServerOptions serve_on;
  serve_on.exit_when_done = false;  // its one worker leaves and comes back
  ServerGroup servers(1, 1, c, serve_on);
  auto join = [&] {
    ClientOptions o;
    o.servers = {servers.server(0).address()};
    o.worker = 0;
    o.config = c;
    o.config.secret = test_secret();
    o.timeout = 20s;
    auto client = std::make_unique<Client>(o);
    client->declare("a", 500);  // one shard (2048 floats) holds both
    client->declare("b", 500);
    client->connect();
    return client;
  };
  std::vector<float> g(500, 0.01f), w(500);
  join()->push("a", g);  // and leaves without a clock
  for (auto until = Clock::now() + 10s; servers.server(0).stats().workers_left == 0 && Clock::now() < until;)
    std::this_thread::sleep_for(5ms);
  auto back = join();
  back->push("b", g);
  back->pull("b", w);  // after the push was taken
  const ServerStats s = servers.server(0).stats();
  EXPECT_EQ(s.applied_per_worker[0], 2u);
  EXPECT_EQ(s.staleness_sum, 1u) << "the new process's push was taken as part of its predecessor's step";
  back.reset();
  servers.stop();
}

// An active message in the credit window that cannot land (a payload larger
// than a slot) is rejected in its turn and its slot consumed, its credit
// returned: it was dropped, and the lane waited for its sequence for good
// (the worker held the clock for everyone until its timeout). A payload
// shorter than its header says is refused too: it was applied, the rest of
// its floats whatever the slot held from an earlier message.
// A raw worker on the active-message path that posts push headers by hand.
struct AmPusher {
  AmPusher(transport::TransportKind kind, const std::string& addresses, uint64_t floats = kFaultFloats,
           uint32_t shards = 3)
      : raw(PeerArgs{kind, 0, 1, {addresses}}, 1, floats, shards, PushPath::kAm), mailbox(raw.mailbox()) {
    // On this path the lane sends its mailbox by active message too.
    raw.context->set_am_handler(ps::kAmWriteBack, [this](transport::AmMessage& m) {
      write_backs.on_message(*raw.context, m, *raw.receive,
                             [](uint64_t, uint64_t) { return ps::WriteBackReceiver::Destination{}; });
    });
  }
  /// A push of sequence `seq` whose header says 16 floats, with `bytes` of payload.
  void post(uint64_t seq, size_t bytes) {
    ps::SlotHeader h{};
    h.magic = ps::kSlotMagic;
    h.type = static_cast<uint16_t>(ps::MsgType::kPush);
    h.worker = 1;
    h.seq = seq;
    h.length = 16;
    std::vector<uint8_t> payload(bytes);
    raw.ep->am_send(ps::kAmPush, &h, sizeof(h), payload.data(), payload.size()).wait_for(kSetupTimeout);
  }
  /// A message of `type` without payload: a clock (to `clock`), or a pull of `length` shards from shard 0.
  void post_empty(ps::MsgType type, uint64_t seq, uint32_t length, uint64_t clock = 0) {
    ps::SlotHeader h{};
    h.magic = ps::kSlotMagic;
    h.type = static_cast<uint16_t>(type);
    h.worker = 1;
    h.seq = seq;
    h.length = length;
    h.clock = clock;
    raw.ep->am_send(ps::kAmPush, &h, sizeof(h), nullptr, 0).wait_for(kSetupTimeout);
  }
  /// Waits (10 s at most) for the lane to have consumed `seq`.
  void consumed(uint64_t seq) {
    for (auto until = Clock::now() + 10s; mailbox[0].load() < seq && Clock::now() < until;) {
      raw.context->progress();
      write_backs.publish(*raw.receive, [](uint64_t, uint64_t, bool) {});
    }
  }
  RawWorker raw;
  const std::atomic<uint64_t>* mailbox;
  ps::WriteBackReceiver write_backs;
};

uint64_t landing_rejections(const ServerStats& s) {
  for (const auto& [reason, count] : s.rejected_by_reason)
    if (reason == "landing") return count;
  return 0;
}

TEST_P(PsFaultTest, AnActiveMessageThatCannotLandIsRejectedInItsTurnAndTheNextTaken) {
  if (GetParam() != transport::TransportKind::kTcp) GTEST_SKIP() << "pushes travel by active message over tcp";
  Config c = fault_config(GetParam());
  ServerGroup servers(1, 2, c);
  AmPusher worker(GetParam(), servers.addresses());
  ASSERT_TRUE(worker.raw.welcome.accepted) << worker.raw.welcome.reason;
  worker.post(1, worker.raw.slot.payload_bytes + 4096);
  worker.consumed(1);
  EXPECT_EQ(worker.mailbox[0].load(), 1u) << "the message that could not land was never consumed";
  worker.post(2, 64);  // 16 floats: taken in turn
  worker.consumed(2);
  EXPECT_EQ(worker.mailbox[0].load(), 2u) << "the next message was not taken";
  worker.post(3, 4);  // its header says 16 floats
  worker.consumed(3);
  EXPECT_EQ(worker.mailbox[0].load(), 3u);
  const ServerStats s = servers.server(0).stats();
  EXPECT_EQ(s.applied_per_worker[1], 1u) << "a payload shorter than its header was applied";
  EXPECT_GE(s.rejected, 2u);
  EXPECT_EQ(landing_rejections(s), 2u) << "not counted as landing rejections";
}

// Worker 0 of two, beside worker 1 that stopped: 10 s to train on (a lane it
// held kept the other waiting 30 s).
ClientOptions beside_a_stopped_worker(const ServerGroup& servers, const Config& c) {
  ClientOptions o;
  o.servers = split(servers.addresses(), ',');
  o.worker = 0;
  o.workers = 2;
  o.config = c;
  o.config.secret = test_secret();
  o.timeout = 10s;
  return o;
}

// A worker that stops reading with a write-back under way (a stopped process,
// a frozen VM) held its lane: the lane waited up to 30 s to send it its next
// pull, then its next mailbox, serving no other worker meanwhile. Now they
// wait their turn, the others train on, and the stopped one is answered in
// turn once it reads again.
TEST_P(PsFaultTest, AWorkerThatStopsReadingHoldsUpNoOtherWorkerOfItsLane) {
  if (GetParam() != transport::TransportKind::kTcp)
    GTEST_SKIP() << "over tcp a write-back moves only as its worker reads; a put over shared memory needs nobody";
  constexpr uint64_t kFloats = uint64_t{4} << 20;  // 16 MiB: more than the sockets between them hold
  constexpr uint32_t kShards = kFloats / kFaultShard;
  Config c = fault_config(GetParam());
  c.server_threads = 1;  // one lane serves both workers
  ServerGroup servers(1, 2, c);
  AmPusher stopped(GetParam(), servers.addresses(), kFloats, kShards);
  ASSERT_TRUE(stopped.raw.welcome.accepted) << stopped.raw.welcome.reason;
  // Three clocks ahead: the other worker's clocks then move the minimum, which goes to both in a mailbox.
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    stopped.post_empty(ps::MsgType::kClock, seq, 0, seq);
    stopped.consumed(seq);
  }
  ASSERT_EQ(stopped.mailbox[0].load(), 3u) << "the clocks were not taken";
  stopped.post_empty(ps::MsgType::kPull, 4, kShards);  // the whole range, twice; then it reads nothing more
  stopped.post_empty(ps::MsgType::kPull, 5, kShards);
  const ClientOptions o = beside_a_stopped_worker(servers, c);
  Client other(o);
  other.declare("w", kFloats);
  std::vector<float> w(kFloats), g(kFloats, 1e-3f);
  try {
    other.connect();
    for (int step = 0; step < 5; ++step) {
      other.push("w", g);
      other.pull("w", w);
      other.clock();
    }
  } catch (const Error& e) {
    ADD_FAILURE() << "the other worker of the lane was held up: " << e.what();
  }
  // It reads again: its second pull and the mailboxes it was owed come in turn.
  for (auto until = Clock::now() + 20s; stopped.mailbox[1].load() < 5 && Clock::now() < until;) {
    stopped.raw.context->progress();
    stopped.write_backs.publish(*stopped.raw.receive, [](uint64_t, uint64_t, bool) {});
  }
  EXPECT_EQ(stopped.mailbox[1].load(), 5u) << "the second pull was never answered";        // Mailbox::pull_done
  EXPECT_EQ(stopped.mailbox[2].load(), 3u) << "the minimum clock it was owed never came";  // Mailbox::min_clock
}

// A worker that stops driving its UCX with a pull under way on the put path
// held its lane 30 s where the transport emulates that put and its
// completion needs the worker (tcp; its own memory over shared memory in UCX
// 1.13): the lane flushed a put into a landing region, or waited for a put
// from the parameters themselves (SGD, no copy). Now such a worker gets a
// copy, the flush is not waited for, the other worker trains on, and the
// stopped one gets its pull, whole, once it reads again.
TEST_P(PsFaultTest, AWorkerThatStopsOnThePutPathHoldsUpNoOtherWorkerOfItsLane) {
  constexpr uint64_t kFloats = uint64_t{4} << 20;  // 16 MiB: more than the sockets between them hold
  constexpr uint32_t kShards = kFloats / kFaultShard;
  for (const bool landing : {false, true}) {
    if (GetParam() == transport::TransportKind::kShm && !landing) continue;  // a native put needs nobody
    SCOPED_TRACE(landing ? "into a landing region" : "into the receive region");
    Config c = fault_config(GetParam());
    c.server_threads = 1;  // one lane serves both workers
    c.push_path = PushPath::kPut;
    ServerGroup servers(1, 2, c);
    // Both leave before the server stops: it waited for the closes of a worker still there.
    std::optional<RawWorker> held;
    held.emplace(PeerArgs{GetParam(), 0, 1, {servers.addresses()}}, 1, kFloats, kShards, PushPath::kPut,
                 landing ? kFloats : 0);
    RawWorker& stopped = *held;
    ASSERT_TRUE(stopped.welcome.accepted) << stopped.welcome.reason;
    ASSERT_EQ(stopped.welcome.push_path, static_cast<uint32_t>(PushPath::kPut));
    ps::SlotHeader pull{};
    pull.magic = ps::kSlotMagic;
    pull.type = static_cast<uint16_t>(ps::MsgType::kPull);
    pull.worker = 1;
    pull.seq = 1;
    pull.length = kShards;  // the whole range; then it drives its UCX no more
    pull.landing = landing ? 1 : 0;
    stopped.write(pull, 1, 1, 0.0f);
    const ClientOptions o = beside_a_stopped_worker(servers, c);
    std::optional<Client> other_worker;
    Client& other = other_worker.emplace(o);
    other.declare("w", kFloats);
    std::vector<float> w(kFloats), g(kFloats, 1e-3f);
    try {
      other.connect();
      for (int step = 0; step < 3; ++step) {
        other.push("w", g);
        other.pull("w", w);
      }
    } catch (const Error& e) {
      ADD_FAILURE() << "the other worker of the lane was held up: " << e.what();
    }
    // It reads again: its pull comes, one snapshot (SGD from zeros: every float alike).
    for (auto until = Clock::now() + 20s; stopped.mailbox()[1].load() < 1 && Clock::now() < until;)
      stopped.context->progress();
    ASSERT_EQ(stopped.mailbox()[1].load(), 1u) << "its pull was never answered";  // Mailbox::pull_done
    const float* got = landing ? stopped.landing_memory.data()
                               : reinterpret_cast<const float*>(static_cast<const uint8_t*>(stopped.receive->data()) +
                                                                stopped.layout.params_offset());
    size_t unlike = 0;
    for (uint64_t i = 0; i < kFloats; ++i) unlike += !(got[i] == got[0]);
    EXPECT_EQ(unlike, 0u) << "the pull landed torn or not at all: float 0 is " << got[0];
    other_worker.reset();
    held.reset();
    servers.stop();
  }
}

// One sequence sent many times (a buggy or hostile worker): each copy after
// the first rewrote the slot under the first's receive, and each that could
// not land left a failure no turn ever took (memory, and a scan per message,
// without bound). Every copy is now refused as it arrives, and counted.
TEST_P(PsFaultTest, AnActiveMessageOfASequenceThatAlreadyArrivedIsRefused) {
  if (GetParam() != transport::TransportKind::kTcp) GTEST_SKIP() << "pushes travel by active message over tcp";
  Config c = fault_config(GetParam());
  ServerGroup servers(1, 2, c);
  AmPusher worker(GetParam(), servers.addresses());
  ASSERT_TRUE(worker.raw.welcome.accepted) << worker.raw.welcome.reason;
  constexpr int kCopies = 20;
  for (int i = 0; i < kCopies; ++i) worker.post(1, 4);  // its header says 16 floats: it cannot land
  worker.consumed(1);
  worker.post(2, 64);
  worker.consumed(2);
  EXPECT_EQ(worker.mailbox[0].load(), 2u) << "the next sequence was not taken";
  const ServerStats s = servers.server(0).stats();
  EXPECT_EQ(s.applied_per_worker[1], 1u);
  EXPECT_EQ(landing_rejections(s), static_cast<uint64_t>(kCopies)) << "copies of sequence 1 not each refused";
}

// A worker admitted that died before it reached every lane holds those
// lanes' clock until it comes back: the server names it and the lanes in its
// 10 s report (it named only workers never admitted, so nobody knew).
TEST_P(PsFaultTest, AWorkerAdmittedThatNeverReachedALaneIsNamed) {
  if (GetParam() != transport::TransportKind::kTcp) GTEST_SKIP() << "the report is the control thread's: one transport";
  Config c = config();
  c.staleness = 2;
  c.shard_floats = 64;  // 256 floats: four shards, two lanes
  c.server_threads = 2;
  ServerOptions serve_on;
  serve_on.exit_when_done = false;
  serve_on.log_connections = false;
  LogWatch log;
  ServerGroup servers(1, 2, c, serve_on);
  connect_to_lane_zero_only_and_die(GetParam(), servers.server(0).address(), 1, 2, c.staleness, 256);
  if (HasFatalFailure()) return;
  // Worker 0 refused (another rule): the report says why the server waits for it.
  Config other = c;
  other.rule = UpdateRule::kMomentum;
  std::string what;
  EXPECT_EQ(error_code_of([&] { connect_worker(servers.addresses(), other, 0, 2); }, &what), Errc::kProtocol) << what;
  // The first report comes 10 s after the server started (waited for: the control thread may run late).
  EXPECT_TRUE(log.wait_for("worker 1 was admitted but never reached lane(s) 1, whose clock holds for it", 30s))
      << log.text();
  EXPECT_NE(log.text().find("waiting for workers 0 to connect"), std::string::npos) << log.text();
  EXPECT_NE(log.text().find("(the clock holds at 0); worker 0 was refused: "), std::string::npos) << log.text();
  servers.stop();
}

// The same across servers: worker 1 reached server 1, so server 1 starts it
// where worker 0 is (clock 2) and server 0, which never saw it and is
// connected first, at 0. The worker goes on from 2, and server 0's lanes,
// which take only the clock after the last they saw, refused its every clock
// ("clock 3 after 0") and held the job at 0 for it: each lane is now told the
// clocks in between.
TEST_P(PsFaultTest, AWorkerStartedAtDifferentClocksByTwoServersClocksOnBoth) {
  rejoin_where_a_worker_died_half_connected(GetParam(), 2, 1);
}

// A worker that rejoins starts no lower than the lane's slowest live worker
// at the moment it reaches the lane, not at the moment it was admitted:
// worker 0 clocked on in between, and the lane started worker 1 at the
// admitted clock, so the minimum went back from 4 to 2 and worker 0 was
// more than the bound ahead of it.
TEST_P(PsFaultTest, ARejoiningWorkerStartsWhereTheSlowestIsWhenItReachesTheLane) {
  Config c = config();
  c.staleness = 2;
  c.server_threads = 1;
  ServerOptions serve_on;
  serve_on.exit_when_done = false;
  ServerGroup servers(1, 2, c, serve_on);
  const std::string address = servers.server(0).address();
  std::vector<float> g(1000, 0.01f);
  auto first = connect_worker(servers.addresses(), c, 0, 2);
  {
    auto second = connect_worker(servers.addresses(), c, 1, 2);
    for (int i = 0; i < 2; ++i)
      for (Client* w : {first.get(), second.get()}) {
        w->push("w", g);
        w->clock();
      }
  }  // worker 1 leaves at clock 2
  auto context = transport::create_context({.transport = GetParam(), .secret = test_secret()});
  auto control = context->connect(transport::SockAddr::parse(address), kSetupTimeout);
  ps::Hello hello;
  hello.worker = 1;
  hello.workers = 2;
  hello.staleness = c.staleness;
  hello.push_path = static_cast<uint32_t>(PushPath::kPut);
  hello.tensors = {{"w", 1000}};
  control->send_control(encode(hello), kSetupTimeout);
  const ps::Welcome welcome = ps::decode_welcome(control->recv_control(kSetupTimeout), address);
  ASSERT_TRUE(welcome.accepted) << welcome.reason;
  ASSERT_EQ(welcome.lanes.size(), 1u);
  for (int i = 0; i < 2; ++i) {  // admitted, not yet on its lane: worker 0 goes on alone
    first->push("w", g);
    first->clock();
  }
  for (auto until = Clock::now() + 20s; servers.server(0).stats().min_clock < 4 && Clock::now() < until;)
    std::this_thread::sleep_for(5ms);
  ASSERT_EQ(servers.server(0).stats().min_clock, 4u);
  auto receive = context->allocate(ps::ReceiveLayout{1, welcome.lanes[0].shards, 1000}.bytes(), Access::kRemoteWrite);
  auto lane = context->connect(transport::SockAddr::parse(address).with_port(welcome.lanes[0].port), kSetupTimeout);
  lane->send_control(
      encode(ps::LaneHello{1, welcome.token, 0, receive->descriptor(Access::kRemoteWrite).serialize(), {}}),
      kSetupTimeout);
  const ps::LaneWelcome lw = ps::decode_lane_welcome(lane->recv_control(kSetupTimeout), address);
  ASSERT_TRUE(lw.accepted) << lw.reason;
  EXPECT_EQ(lw.start_clock, 4u) << "started below the slowest live worker";
  std::this_thread::sleep_for(200ms);  // the lane has taken the worker into its minimum
  EXPECT_EQ(servers.server(0).stats().min_clock, 4u) << "the minimum clock went back";
  lane.reset();
  control.reset();
  first.reset();
  servers.stop();
}

// A worker started for another number of workers, with another staleness
// bound than the first worker's, or asking for another update rule than the
// server's, is refused at hello naming both values,
// instead of waiting at the first clock for workers that never come.
TEST_P(PsFaultTest, WorkersThatDisagreeOnWorkersStalenessOrRuleAreRefusedNamingBoth) {
  Config c = config();
  c.staleness = 3;
  ServerGroup servers(1, 2, c);
  auto join = [&](uint32_t worker, uint32_t workers, uint64_t staleness, std::vector<std::string> rule = {}) {
    Config asked = c;
    parse_config(asked, rule, nullptr);  // flags that state a rule
    asked.staleness = staleness;
    return connect_worker(servers.addresses(), asked, worker, workers);
  };
  auto first = join(0, 2, 3);
  std::string what;
  EXPECT_EQ(error_code_of([&] { join(1, 3, 3); }, &what), Errc::kProtocol);
  EXPECT_NE(what.find("started for 3 workers, this server for 2"), std::string::npos) << what;
  EXPECT_EQ(error_code_of([&] { join(1, 2, 0); }, &what), Errc::kProtocol);
  EXPECT_NE(what.find("staleness bound is 0, the first worker's 3"), std::string::npos) << what;
  // A worker asking for a rule the server does not apply; one that asks for the server's own is admitted.
  EXPECT_EQ(error_code_of([&] { join(1, 2, 3, {"--rule", "dc-asgd-a"}); }, &what), Errc::kProtocol);
  EXPECT_NE(what.find("rule dc-asgd-a vs sgd"), std::string::npos) << what;
  EXPECT_EQ(error_code_of([&] { join(1, 2, 3, {"--lr", "0.5"}); }, &what), Errc::kProtocol);
  EXPECT_NE(what.find("lr 0.5 vs 0.01"), std::string::npos) << what;
  auto second = join(1, 2, 3, {"--rule", "sgd", "--lr", "0.01"});  // agreeing: admitted
  EXPECT_EQ(servers.server(0).stats().rejected, 0u);
  first.reset();
  second.reset();
  servers.stop();
}

// A server given a staleness bound (--staleness) holds every worker to it,
// the first one too: it used to adopt the first worker's bound whatever it was
// given. A worker whose tensors differ is told which one.
TEST_P(PsFaultTest, AServerGivenABoundHoldsTheFirstWorkerToItAndADifferingTensorIsNamed) {
  Config c = config();
  parse_config(c, {"--staleness", "3"}, nullptr);
  ASSERT_TRUE(c.staleness_stated);
  ServerGroup servers(1, 2, c);
  Config asked = c;
  asked.staleness = kInfiniteStaleness;
  std::string what;
  EXPECT_EQ(error_code_of([&] { connect_worker(servers.addresses(), asked, 0, 2); }, &what), Errc::kProtocol);
  EXPECT_NE(what.find("staleness bound is inf (async), this server's 3"), std::string::npos) << what;
  auto first = connect_worker(servers.addresses(), c, 0, 2);
  EXPECT_EQ(error_code_of([&] { connect_worker(servers.addresses(), c, 1, 2, 999); }, &what), Errc::kProtocol);
  EXPECT_NE(what.find("its declared tensors differ from the first worker's table: tensor 0 is 'w' of 999 floats, "
                      "there 'w' of 1000 floats"),
            std::string::npos)
      << what;
  first.reset();
  servers.stop();
}

// A forked child pushes on its parent's client: refused as another
// process's, and its destructor leaves the parent's connections alone.
void expect_a_forked_childs_push_refused(std::unique_ptr<Client>& client, const std::vector<float>& g) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int status = 3;
    try {
      client->push("w", g);
      status = 2;
    } catch (const Error& e) {
      if (e.code() == Errc::kInvalidArgument &&
          std::string(e.what()).find("this client belongs to process") != std::string::npos)
        status = 0;
    }
    try {  // its counters are the parent's too
      static_cast<void>(client->stats());
      if (status == 0) status = 4;
    } catch (const Error& e) {
      if (status == 0 && std::string(e.what()).find("stats: this client belongs to process") == std::string::npos)
        status = 4;
    }
    client.reset();  // must not close the parent's connections
    ::_exit(status);
  }
  int status = -1;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "2: the child's push was accepted; 3: refused for another reason; 4: its stats() was not refused as a child's";
}

// A client serves one thread at a time: a second thread's call is refused
// (two at once tripped UCX's own assertion); interrupt() from another thread
// ends a clock that waits for a straggler, and every later call, and the
// client still says goodbye. Before, nothing but the timeout ended the wait.
TEST_P(PsFaultTest, ASecondThreadsCallIsRefusedAndInterruptEndsABlockedClock) {
  Config c = config();
  c.staleness = 0;
  ServerGroup servers(1, 2, c);
  auto client = connect_worker(servers.addresses(), c, 0, 2);
  const std::vector<float> g(1000, 1.0f);
  client->push("w", g);
  auto blocked = std::async(std::launch::async, [&] { client->clock(); });  // worker 1 never comes
  // In progress once a lane took its clock (a fixed 300 ms could pass before the thread ran, loaded).
  for (auto until = Clock::now() + 20s; servers.server(0).stats().clocks == 0 && Clock::now() < until;)
    std::this_thread::sleep_for(5ms);
  ASSERT_GT(servers.server(0).stats().clocks, 0u) << "the clock was not sent";
  ASSERT_EQ(blocked.wait_for(0s), std::future_status::timeout) << "the clock did not wait for worker 1";
  std::string what;
  EXPECT_EQ(error_code_of([&] { client->push("w", g); }, &what), Errc::kInvalidArgument);
  EXPECT_NE(what.find("push: another call of this client is in progress on another thread"), std::string::npos) << what;
  // Reading the counters raced the call that changes them.
  EXPECT_EQ(error_code_of([&] { client->stats(); }, &what), Errc::kInvalidArgument);
  EXPECT_NE(what.find("stats: another call of this client is in progress"), std::string::npos) << what;
  EXPECT_EQ(error_code_of([&] { client->clock_value(); }, &what), Errc::kInvalidArgument);
  // A child forked while a call is in progress is told the client is not
  // its own (it was told another call was in progress).
  expect_a_forked_childs_push_refused(client, g);
  client->interrupt();
  ASSERT_EQ(blocked.wait_for(10s), std::future_status::ready) << "interrupt() did not end the clock";
  EXPECT_EQ(error_code_of([&] { blocked.get(); }, &what), Errc::kCancelled);
  EXPECT_NE(what.find("interrupted (the client was interrupted; it takes no more calls)"), std::string::npos) << what;
  std::vector<float> w(1000);
  EXPECT_EQ(error_code_of([&] { client->pull("w", w); }, &what), Errc::kCancelled);
  EXPECT_GE(client->stats().pushes, 1u);  // the counters stay readable after interrupt()
  client.reset();                         // says goodbye all the same
  for (auto until = std::chrono::steady_clock::now() + 10s;
       servers.server(0).stats().workers_left == 0 && std::chrono::steady_clock::now() < until;)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(servers.server(0).stats().workers_left, 1u);
  servers.stop();
}

// A watchdog destroying a client whose clock hangs on another thread freed
// what that call was using (a use-after-free, or UCX's assertion): the
// destroy interrupts the call, waits for it, and says goodbye.
TEST_P(PsFaultTest, DestroyingAClientWhileAnotherThreadsCallIsInProgressEndsThatCallFirst) {
  Config c = config();
  c.staleness = 0;
  ServerGroup servers(1, 2, c);
  auto client = connect_worker(servers.addresses(), c, 0, 2);
  client->push("w", std::vector<float>(1000, 1.0f));
  auto blocked = std::async(std::launch::async, [&] { client->clock(); });  // worker 1 never comes
  for (auto until = Clock::now() + 20s; servers.server(0).stats().clocks == 0 && Clock::now() < until;)
    std::this_thread::sleep_for(5ms);
  ASSERT_GT(servers.server(0).stats().clocks, 0u) << "the clock was not sent";
  ASSERT_EQ(blocked.wait_for(0s), std::future_status::timeout) << "the clock did not wait for worker 1";
  client.reset();
  ASSERT_EQ(blocked.wait_for(0s), std::future_status::ready) << "the destroy returned before the call it ended";
  std::string what;
  EXPECT_EQ(error_code_of([&] { blocked.get(); }, &what), Errc::kCancelled) << what;
  for (auto until = Clock::now() + 10s; servers.server(0).stats().workers_left == 0 && Clock::now() < until;)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(servers.server(0).stats().workers_left, 1u) << "no goodbye";
  // A child forked from the server's process: its stats() hung on a lock a parent thread held at the fork, or
  // gave the parent's counters as they were then.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int status = 2;
    try {
      static_cast<void>(servers.server(0).stats());
    } catch (const Error& e) {
      status = std::string(e.what()).find("stats: this server belongs to process") == std::string::npos ? 3 : 0;
    }
    ::_exit(status);
  }
  int status = -1;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: a forked child's server stats() answered; 3: refused for another reason";
  servers.stop();
}

// A server that answers probes from a script, over the real transport, and
// refuses every Hello (the test is about what the worker makes of the answers).
class ScriptedProbeServer {
 public:
  /// The answers to successive probes (kProbeFresh, ...); the last one repeats.
  ScriptedProbeServer(transport::TransportKind kind, uint64_t instance, std::vector<uint32_t> answers)
      : context_(transport::create_context({.transport = kind, .secret = test_secret()})),
        listener_(context_->listen(transport::SockAddr::parse("127.0.0.1:0"))),
        thread_([this, instance, answers] {
          size_t probes = 0;
          while (!stop_) {
            std::unique_ptr<transport::Endpoint> ep;
            try {
              ep = listener_->accept(100ms);
            } catch (const Error&) {
              continue;  // nobody came within 100 ms
            }
            const ps::Hello h = ps::decode_hello(ep->recv_control(kSetupTimeout), "worker");
            ps::Welcome w;
            w.instance = instance;
            if (h.probe) {
              w.accepted = ps::kWouldAdmit;
              w.resumed = answers[std::min(probes++, answers.size() - 1)];
            } else {
              w.accepted = ps::kRefused;
              w.reason = "the scripted server takes no worker";
            }
            ep->send_control(ps::encode(w), kSetupTimeout);
            kept_.push_back(std::move(ep));  // closed once the worker closed its side
          }
        }) {}
  ~ScriptedProbeServer() {
    stop_ = true;
    thread_.join();
  }
  std::string address() const { return listener_->address().to_string(); }

 private:
  std::unique_ptr<transport::Context> context_;
  std::unique_ptr<transport::Listener> listener_;
  std::vector<std::unique_ptr<transport::Endpoint>> kept_;
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: it uses the members above
};

// A worker that starts late probes its servers one by one: the job's first
// workers may join every server and push between two of its probes, so it
// saw the first server empty and the second holding parameters, and refused
// itself as "part trained, part zeros" (seen under load:
// NoGradientLostOrAppliedTwiceAndNoTornShard). A server found empty is asked
// again once another was found holding; one still empty is refused as before.
TEST_P(PsFaultTest, AJobThatStartedBetweenTwoProbesIsNotTakenForAPartTrainedOne) {
  ScriptedProbeServer started_meanwhile(GetParam(), 1, {ps::kProbeFresh, ps::kProbeHolding});
  ScriptedProbeServer holding(GetParam(), 2, {ps::kProbeHolding});
  ClientOptions o;
  o.servers = {started_meanwhile.address(), holding.address()};
  o.config = fault_config(GetParam());
  o.config.secret = test_secret();
  o.timeout = 10s;
  std::string what;
  {
    Client client(o);
    client.declare("w", 10);
    EXPECT_EQ(error_code_of([&] { client.connect(); }, &what), Errc::kProtocol);
  }
  EXPECT_NE(what.find("the scripted server takes no worker"), std::string::npos)
      << "the worker did not go on to its Hello: " << what;
  // Empty when asked again: a server restarted without its checkpoint, refused before any Hello.
  ScriptedProbeServer empty(GetParam(), 3, {ps::kProbeFresh});
  o.servers = {empty.address(), holding.address()};
  Client client(o);
  client.declare("w", 10);
  EXPECT_EQ(error_code_of([&] { client.connect(); }, &what), Errc::kInvalidArgument);
  EXPECT_NE(what.find("hold a job's parameters (resumed from a checkpoint, or updated) but " + empty.address() +
                      " started empty"),
            std::string::npos)
      << what;
}

// A worker of two servers refused by the second (its --max-bytes): the first
// had already admitted it, so it had fixed the job's table to the refused
// one (the corrected retry was refused there) and, the job's only worker
// gone, ended. Every server is now asked before any is joined.
// The servers of a one-worker job, each given its own options by `tweak`
// (ServerGroup gives them all the same) and run on a thread of its own;
// stopped and joined however the test ends.
struct JobServers {
  JobServers(uint32_t count, const Config& c, const std::function<void(uint32_t, ServerOptions&)>& tweak) {
    for (uint32_t i = 0; i < count; ++i) {
      ServerOptions o;
      o.listen = "127.0.0.1:0";
      o.index = i;
      o.servers = count;
      o.workers = 1;
      o.config = c;
      tweak(i, o);
      servers.push_back(std::make_unique<Server>(o));
    }
    for (auto& s : servers) running.emplace_back([&s] { s->run(); });
  }
  ~JobServers() {
    for (auto& s : servers) s->stop();
    join();
  }
  void join() {
    for (auto& t : running)
      if (t.joinable()) t.join();
  }
  std::vector<std::unique_ptr<Server>> servers;
  std::vector<std::thread> running;
};

// The code connect() of a worker of `o` declaring "w" of `floats` throws, `what` its message.
Errc connect_refusal(const ClientOptions& o, uint64_t floats, std::string* what) {
  return error_code_of(
      [&] {
        Client client(o);
        client.declare("w", floats);
        client.connect();
      },
      what);
}

TEST_P(PsFaultTest, AConnectRefusedByOneServerFixesNothingAtTheOthers) {
  Config c = config();
  c.secret = test_secret();
  JobServers job(2, c, [](uint32_t i, ServerOptions& o) {
    if (i == 1) o.max_bytes = 4000;  // 1000 floats
  });
  auto& servers = job.servers;
  auto worker = [&](uint64_t floats) {
    ClientOptions o;
    o.servers = {servers[0]->address(), servers[1]->address()};
    o.workers = 1;
    o.config = c;
    o.timeout = 20s;
    auto client = std::make_unique<Client>(o);
    client->declare("w", floats);
    client->connect();
    return client;
  };
  std::string what;
  EXPECT_EQ(error_code_of([&] { worker(3000); }, &what), Errc::kProtocol) << what;
  EXPECT_NE(what.find("server " + servers[1]->address() + " refused worker 0"), std::string::npos) << what;
  EXPECT_NE(what.find("this server's share of its declared table of 3000 floats, 1500 floats (6000 bytes), is over "
                      "this server's limit of 4000 bytes (--max-bytes)"),
            std::string::npos)
      << what;
  std::this_thread::sleep_for(200ms);  // what the first server made of it, had it admitted the worker
  // Its limit bounds its share, not the table: a model larger than one
  // machine is what several servers are for (the whole table's 8000 bytes were refused).
  auto corrected = worker(2000);  // refused there: "its declared tensors differ", or nobody listening
  const std::vector<float> g(2000, 1.0f);
  corrected->push("w", g);
  corrected->clock();
  std::vector<float> w(2000);
  corrected->pull("w", w);
  EXPECT_EQ(w, std::vector<float>(2000, -c.learning_rate));
  corrected.reset();
  job.join();  // the job's one worker left: both servers end
  for (auto& s : servers) EXPECT_EQ(s->stats().workers_left, 1u);
}

// The job's layout is checked by the probe too: a server started with another
// shard size (or placed at another index than the worker's list gives it)
// refused the worker only once it had joined the servers before it, which
// counted it lost and ended their job.
TEST_P(PsFaultTest, AServerOfAnotherLayoutRefusesTheProbeAndNoServerIsJoined) {
  Config c = config();
  c.secret = test_secret();
  c.shard_floats = 1024;
  for (const bool misplaced : {false, true}) {
    SCOPED_TRACE(misplaced ? "the list gives the servers in another order" : "server 1 has another shard size");
    JobServers job(3, c, [&](uint32_t i, ServerOptions& so) {
      if (i == 1 && !misplaced) so.config.shard_floats = 512;
    });
    auto& servers = job.servers;
    ClientOptions o;
    o.servers = {servers[0]->address(), servers[misplaced ? 2 : 1]->address(), servers[misplaced ? 1 : 2]->address()};
    o.workers = 1;
    o.config = c;
    o.timeout = 20s;
    std::string what;
    EXPECT_EQ(connect_refusal(o, 6000, &what), Errc::kProtocol) << what;
    EXPECT_NE(what.find(misplaced ? "this server is index 2 of 3" : "--shard-floats must agree"), std::string::npos)
        << what;
    std::this_thread::sleep_for(200ms);  // what server 0 made of it, had it admitted the worker
    const ServerStats first = servers[0]->stats();
    EXPECT_EQ(first.workers_connected + first.workers_lost + first.workers_left, 0u)
        << "server 0 admitted the worker another server refused";
  }
}

// Each server checked a worker against itself only: servers started for
// other worker counts, or applying other rules to a worker that stated none,
// each admitted it; the job then trained its halves by different rules, or
// held the worker at one server's clock until its timeout.
TEST_P(PsFaultTest, ServersThatWouldRunTheWorkerDifferentlyAreRefusedBeforeAnyHello) {
  Config c = config();
  c.secret = test_secret();
  c.rule_stated = false;
  for (const bool rule : {false, true}) {
    SCOPED_TRACE(rule ? "server 1 applies another rule" : "server 1 expects another worker count");
    JobServers job(2, c, [&](uint32_t i, ServerOptions& so) {
      if (i == 1 && rule) so.config.rule = UpdateRule::kMomentum;
      if (i == 1 && !rule) so.workers = 2;
    });
    auto& servers = job.servers;
    ClientOptions o;
    o.servers = {servers[0]->address(), servers[1]->address()};
    o.workers = 0;  // not stated, as a Python or C worker may leave it
    o.config = c;
    o.timeout = 20s;
    std::string what;
    EXPECT_EQ(connect_refusal(o, 600, &what), Errc::kInvalidArgument) << what;
    const std::string pair =
        "servers 0 (" + servers[0]->address() + ") and 1 (" + servers[1]->address() + ") of the job disagree on ";
    EXPECT_NE(what.find(pair + (rule ? "the update rule they would apply to this worker: rule sgd vs momentum"
                                     : "the workers they expect: 1 vs 2: give every server the job's --workers")),
              std::string::npos)
        << what;
    std::this_thread::sleep_for(200ms);  // what the servers made of it, had they admitted the worker
    for (auto& s : servers) EXPECT_EQ(s->stats().workers_connected, 0u);
  }
}

// A worker that died while it joined the job's servers, after its probes
// and before its Hello reached server 1 (server 0, joined, counted it lost):
// server 1 never saw it, held the SSP clock for it for good and never ended
// its job. Each server keeps the probe's connection, and one that closes after
// the worker said it joins is a worker lost where it never reached a lane:
// here worker 1 dies before any Hello (both servers, with no table yet, start
// their job without it), or once server 1 admitted its Hello, before its lanes
// (admitted there, it was taken for joined, and held the clock there).
TEST_P(PsFaultTest, AWorkerThatDiesWhileJoiningIsLostToTheServersItNeverReached) {
  Config c = config();
  c.secret = test_secret();
  c.staleness = 1;
  for (const bool admitted : {false, true}) {
    SCOPED_TRACE(admitted ? "server 1 admitted its Hello" : "no Hello");
    JobServers job(2, c, [](uint32_t, ServerOptions& so) { so.workers = 2; });
    auto& servers = job.servers;
    const std::vector<std::string> addresses = {servers[0]->address(), servers[1]->address()};
    OutputCapture log;
    {
      auto context = transport::create_context({.transport = GetParam(), .secret = test_secret()});
      std::vector<std::unique_ptr<transport::Endpoint>> probes;
      ps::Hello h;
      h.worker = 1;
      h.workers = 2;
      h.staleness = c.staleness;
      h.tensors = {{"w", 1000}};
      h.servers = 2;
      h.shard_floats = c.shard_floats;
      for (uint32_t i = 0; i < 2; ++i) {
        h.server_index = i;
        h.probe = 1;
        probes.push_back(context->connect(transport::SockAddr::parse(addresses[i]), kSetupTimeout));
        probes.back()->send_control(encode(h), kSetupTimeout);
        const ps::Welcome answer = ps::decode_welcome(probes.back()->recv_control(kSetupTimeout), addresses[i]);
        ASSERT_EQ(answer.accepted, ps::kWouldAdmit) << answer.reason;
        h.job = answer.job;
        h.probe = ps::kProbeJoining;
        probes.back()->send_control(encode(h), kSetupTimeout);
      }
      if (admitted) {
        h.server_index = 1;
        h.probe = 0;
        auto control = context->connect(transport::SockAddr::parse(addresses[1]), kSetupTimeout);
        control->send_control(encode(h), kSetupTimeout);
        const ps::Welcome welcome = ps::decode_welcome(control->recv_control(kSetupTimeout), addresses[1]);
        ASSERT_EQ(welcome.accepted, ps::kAdmitted) << welcome.reason;
      }
    }  // worker 1 dies: its connections close
    ClientOptions o;
    o.servers = addresses;
    o.worker = 0;
    o.workers = 2;
    o.config = c;
    o.timeout = 10s;
    Client client(o);
    client.declare("w", 1000);
    client.connect();
    const std::vector<float> g(1000, 0.01f);
    try {
      for (int i = 0; i < 4; ++i) {  // past the bound: worker 1 no longer holds the clock
        client.push("w", g);
        client.clock();
      }
    } catch (const Error& e) {
      ADD_FAILURE() << "the clock waited for the worker that died joining: " << e.what();
    }
    for (auto& s : servers) EXPECT_EQ(s->stats().workers_lost, 1u);
    // Each server names itself: two servers' lines met in one log, and neither said which it was.
    const std::string said = log.end();
    for (const char* server : {"rdmaps-server 0/2: ", "rdmaps-server 1/2: "})
      EXPECT_NE(said.find(std::string(server) + "worker 1 died while it joined the job's servers"), std::string::npos)
          << said;
  }
}

// Server 0 restarted before its first checkpoint (none is written before the
// first update) while server 1 held the job's table: a new worker sent server
// 0's new offer as its job, server 0 took it, and server 1 refused that worker
// and every later one. The job of the servers holding a table is the one.
TEST_P(PsFaultTest, AFreshServer0BesideAStartedServer1TakesItsJob) {
  Config c = config();
  ServerOptions serve_on;
  serve_on.exit_when_done = false;
  ServerGroup servers(2, 2, c, serve_on);
  ClientOptions o = local_worker_options(servers.addresses(), c);
  o.workers = 2;
  o.timeout = 10s;
  {
    Client first(o);
    first.declare("w", 1000);
    first.connect();
  }  // joined both and left, before any push
  servers.restart(0, c);
  for (const uint32_t worker : {1u, 0u}) {
    o.worker = worker;
    try {
      Client client(o);
      client.declare("w", 1000);
      client.connect();
    } catch (const Error& e) {
      ADD_FAILURE() << "worker " << worker << " was refused: " << e.what();
    }
  }
  servers.stop();
}

// connect() to something that took the connection and never answers (a
// server still resuming a checkpoint, a stopped one): interrupt() ends it.
// Before, it ran to its whole timeout (60 s by default, 300 s in
// rdmaps.torch), and Ctrl-C in Python waited as long.
TEST_P(PsFaultTest, InterruptEndsAConnectThatWaitsOnASilentServer) {
  auto silent = transport::TcpSocket::listen(transport::SockAddr::parse("127.0.0.1:0"));  // the kernel accepts
  ClientOptions o;
  o.servers = {silent.local_address().to_string()};
  o.config = config();
  o.config.secret = test_secret();
  o.timeout = 20s;
  Client client(o);
  client.declare("w", 10);
  auto connecting = std::async(std::launch::async, [&] { client.connect(); });
  // Waiting on the server once its connection came (a fixed 300 ms could pass before the thread ran, loaded:
  // interrupted before it began, connect() says so otherwise).
  transport::TcpSocket came;
  for (auto until = Clock::now() + 20s; !came.valid() && Clock::now() < until; std::this_thread::sleep_for(5ms))
    came = silent.try_accept(nullptr);
  ASSERT_TRUE(came.valid()) << "connect() never reached the server";
  ASSERT_EQ(connecting.wait_for(0s), std::future_status::timeout) << "connect() did not wait";
  client.interrupt();
  ASSERT_EQ(connecting.wait_for(10s), std::future_status::ready) << "interrupt() did not end the connect";
  std::string what;
  EXPECT_EQ(error_code_of([&] { connecting.get(); }, &what), Errc::kCancelled) << what;
  EXPECT_NE(what.find("cancelled (interrupted)"), std::string::npos) << what;
}

// A worker ("w" of kFaultFloats, a 20 s timeout, --reconnect `reconnect_ms`)
// whose server process is then killed: its next call reconnects to whatever
// stands at `address` then. Null if the server never came up.
std::unique_ptr<Client> worker_of_a_killed_server(transport::TransportKind kind, uint64_t reconnect_ms,
                                                  std::string* address) {
  int port = 0;
  PeerProcess server = listening_peer("standalone_server", kind, 1, {}, &port);
  *address = "127.0.0.1:" + std::to_string(port);
  ClientOptions o;
  o.servers = {*address};
  o.config = fault_config(kind);
  o.config.secret = test_secret();
  o.config.reconnect_ms = reconnect_ms;
  o.timeout = 20s;
  auto client = connect_when_up(o, "w", kFaultFloats);
  if (!client) return nullptr;
  std::vector<float> w(kFaultFloats, 1.0f);
  client->init("w", w);
  client->pull("w", w);
  server.kill_now();
  return client;
}

// A server killed and something at its port that takes connections and says
// nothing (a restarted server listens before it has loaded its checkpoint):
// each reconnect attempt waited out the whole timeout (20 s here) though
// --reconnect allowed 1 s, and a leaving client past its 5 s.
TEST_P(PsFaultTest, AReconnectEndsWithItsWindowThoughTheServerTakesTheConnectionSilently) {
  std::string address;
  auto client = worker_of_a_killed_server(GetParam(), 1000, &address);
  ASSERT_TRUE(client) << "the server process did not come up";
  std::vector<float> w(kFaultFloats);
  auto silent = transport::TcpSocket::listen(transport::SockAddr::parse(address));  // the kernel accepts
  std::string what;
  const auto start = Clock::now();
  EXPECT_EQ(error_code_of([&] { client->pull("w", w); }, &what), Errc::kPeerGone) << what;
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_NE(what.find("did not come back within 1 s"), std::string::npos) << what;
  // An attempt lasts at least 2 s; the bug took the 20 s timeout per attempt: a loose bound still tells.
  EXPECT_LT(seconds, 12.0) << "a reconnect of 1 s took " << seconds << " s: " << what;
}

// Stands in for a restarted server at `address`: admits the next worker with
// `welcome`'s layout on one lane, takes it on that lane, and then answers
// nothing, though its transport still takes what comes (a server stopped, or
// a lane stuck, after admitting).
class AdmittingStandIn {
 public:
  AdmittingStandIn(transport::TransportKind kind, const std::string& address, ps::Welcome welcome)
      : kind_(kind),
        context_(transport::create_context({.transport = kind, .secret = test_secret()})),
        control_(context_->listen(transport::SockAddr::parse(address))),
        lane_(context_->listen(transport::SockAddr::parse("127.0.0.1:0"))),
        thread_([this, welcome] { serve(welcome); }) {}
  ~AdmittingStandIn() {
    done_ = true;
    thread_.join();
  }
  bool reached_lane() const { return reached_lane_; }

 private:
  std::unique_ptr<transport::Endpoint> next(transport::Listener& listener) {
    for (; !done_; std::this_thread::sleep_for(1ms))
      if (auto ep = listener.poll()) return ep;
    return nullptr;
  }
  void serve(ps::Welcome welcome) {
    auto control = next(*control_);
    if (!control) return;
    const ps::Hello hello = ps::decode_hello(control->recv_control(kSetupTimeout), "the worker");
    const bool am = kind_ == transport::TransportKind::kTcp;
    welcome.accepted = ps::kAdmitted;
    welcome.push_path = static_cast<uint32_t>(am ? PushPath::kAm : PushPath::kPut);
    welcome.inbox_slots = 4;
    welcome.token = 1;
    welcome.instance = 7;
    welcome.lanes = {{static_cast<uint32_t>(lane_->address().port()), 0, welcome.lanes.at(0).shards}};
    auto inbox = context_->allocate(
        ps::SlotLayout{welcome.shard_floats * sizeof(float)}.slot_bytes() * welcome.inbox_slots, Access::kRemoteWrite);
    control->send_control(encode(welcome), kSetupTimeout);
    auto lane = next(*lane_);
    if (!lane) return;
    const ps::LaneHello lane_hello = ps::decode_lane_hello(lane->recv_control(kSetupTimeout), "the worker");
    EXPECT_EQ(lane_hello.worker, hello.worker);
    lane->send_control(
        encode(ps::LaneWelcome{1, "", lane_hello.clock, inbox->descriptor(Access::kRemoteWrite).serialize()}),
        kSetupTimeout);
    reached_lane_ = true;
    for (; !done_; std::this_thread::sleep_for(1ms)) context_->progress();
  }

  transport::TransportKind kind_;
  std::unique_ptr<transport::Context> context_;
  std::unique_ptr<transport::Listener> control_, lane_;
  std::atomic<bool> done_{false}, reached_lane_{false};
  std::thread thread_;  // last: starts once the rest is made
};

ps::Welcome stand_in_layout(uint64_t floats, uint32_t shard_floats) {
  ps::Welcome w;
  w.range_end = floats;
  w.shard_floats = shard_floats;
  w.lanes = {{0, 0, static_cast<uint32_t>((floats + shard_floats - 1) / shard_floats)}};
  return w;
}

// A reconnect whose server admits the worker and then answers nothing (its
// re-pull never comes back): each attempt's re-pull waited the whole client
// timeout (20 s here, once per lane) though --reconnect allowed 1 s.
TEST_P(PsFaultTest, AReconnectWhoseServerAdmitsAndThenSaysNothingEndsWithItsWindow) {
  std::string address;
  auto client = worker_of_a_killed_server(GetParam(), 1000, &address);
  ASSERT_TRUE(client) << "the server process did not come up";
  std::vector<float> w(kFaultFloats);
  std::optional<AdmittingStandIn> stand_in;
  stand_in.emplace(GetParam(), address, stand_in_layout(kFaultFloats, kFaultShard));
  std::string what;
  const auto start = Clock::now();
  EXPECT_EQ(error_code_of([&] { client->pull("w", w); }, &what), Errc::kPeerGone) << what;
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_TRUE(stand_in->reached_lane()) << "the reconnect never reached the re-pull: " << what;
  EXPECT_NE(what.find("did not come back within 1 s"), std::string::npos) << what;
  EXPECT_NE(what.find("waiting for parameters from server " + address), std::string::npos) << what;
  // An attempt lasts at least 2 s; the bug took the 20 s timeout: a loose bound still tells.
  EXPECT_LT(seconds, 12.0) << "a reconnect of 1 s took " << seconds << " s: " << what;
  client.reset();
  stand_in.reset();
}

// At the killed server's address, a server that refuses every Hello for now
// (as one without memory for the worker yet does).
class RefusingStandIn {
 public:
  RefusingStandIn(transport::TransportKind kind, const std::string& address)
      : context_(transport::create_context({.transport = kind, .secret = test_secret()})),
        control_(context_->listen(transport::SockAddr::parse(address))),
        thread_([this] { serve(); }) {}
  ~RefusingStandIn() {
    done_ = true;
    thread_.join();
  }
  int refused() const { return refused_; }

 private:
  void serve() {
    for (; !done_; std::this_thread::sleep_for(1ms)) {
      try {  // a worker that gave up on an attempt under load must not end the test binary
        auto ep = control_->poll();
        if (!ep) continue;
        ps::decode_hello(ep->recv_control(kSetupTimeout), "the worker");
        ps::Welcome no;
        no.accepted = ps::kRefusedForNow;
        no.reason = "this server has no memory for this worker (a stand-in's words)";
        ep->send_control(encode(no), kSetupTimeout);
        ++refused_;
      } catch (const Error&) {
      }
    }
  }
  std::unique_ptr<transport::Context> context_;
  std::unique_ptr<transport::Listener> control_;
  std::atomic<bool> done_{false};
  std::atomic<int> refused_{0};
  std::thread thread_;  // last: starts once the rest is made
};

// A reconnect that met a server back but refusing it for now to the end of
// its window said the server "did not come back". (Peer gone all the same:
// the client is broken, and a new one connects.)
TEST_P(PsFaultTest, AReconnectRefusedForNowToTheEndSaysTheServerCameBack) {
  std::string address;
  auto client = worker_of_a_killed_server(GetParam(), 1000, &address);
  ASSERT_TRUE(client) << "the server process did not come up";
  std::vector<float> w(kFaultFloats);
  RefusingStandIn stand_in(GetParam(), address);
  std::string what;
  EXPECT_EQ(error_code_of([&] { client->pull("w", w); }, &what), Errc::kPeerGone) << what;  // broken for good
  EXPECT_GE(stand_in.refused(), 1);
  EXPECT_NE(what.find("server " + address + " came back but refused it for now at every try within 1 s"),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("last attempt: server " + address + " refused worker 0: this server has no memory"),
            std::string::npos)
      << what;
  client.reset();
}

// A server back at the address with another part of the model (another
// index: servers swapped hosts) refuses the worker for good: the reconnect
// tried again for its whole window, each attempt admitted and dropped.
TEST_P(PsFaultTest, AReconnectToAServerOfAnotherRangeStopsAtOnce) {
  std::string address;
  auto client = worker_of_a_killed_server(GetParam(), 10000, &address);
  ASSERT_TRUE(client) << "the server process did not come up";
  std::vector<float> w(kFaultFloats);
  AdmittingStandIn stand_in(GetParam(), address, stand_in_layout(kFaultFloats / 2, kFaultShard));
  std::string what;
  EXPECT_EQ(error_code_of([&] { client->pull("w", w); }, &what), Errc::kPeerGone) << what;
  EXPECT_NE(what.find("no retry can pass"), std::string::npos) << what;
  EXPECT_NE(what.find("serves floats [0, 2500)"), std::string::npos) << what;
  client.reset();
}

// A forked child's calls on its parent's client are refused, and its
// destructor leaves the parent's connections alone: the child's pushes broke
// the parent's sequence (the server rejected the parent's next ones), and its
// destructor said goodbye for the parent.
TEST_P(PsFaultTest, AForkedChildNeitherUsesNorClosesItsParentsClient) {
  Config c = config();
  ServerGroup servers(1, 1, c);
  auto client = connect_worker(servers.addresses(), c, 0, 1);
  const std::vector<float> g(1000, 1.0f);
  client->push("w", g);
  client->clock();
  expect_a_forked_childs_push_refused(client, g);
  for (int i = 0; i < 3; ++i) {
    client->push("w", g);
    client->clock();
  }
  std::vector<float> w(1000);
  client->pull("w", w);
  EXPECT_EQ(servers.server(0).stats().rejected, 0u);
  EXPECT_EQ(servers.server(0).stats().workers_left, 0u);
  client.reset();
  servers.stop();
}

// Two live workers with one id: the second is refused naming the id, once the
// server waited for a first connection that might have been closing (a
// restarted worker's predecessor: DeadWorkerIsDroppedFromTheClockAndMayRejoin).
TEST_P(PsFaultTest, ASecondWorkerWithALiveIdIsRefusedNamingIt) {
  Config c = config();
  ServerGroup servers(1, 2, c);
  auto join = [&] { return connect_worker(servers.addresses(), c, 1, 2); };
  auto first = join();
  std::string what;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(error_code_of([&] { join(); }, &what), Errc::kRefusedForNow);  // a later connect may pass
  EXPECT_NE(what.find("worker id 1 is already connected (waited 3 s"), std::string::npos) << what;
  EXPECT_GE(std::chrono::steady_clock::now() - start, 3s) << "refused before the earlier connection had time to close";
  first.reset();
  servers.stop();
}

// Worker 1's Hello of a job of 2, by hand: a test sees what the server answers it.
ps::Hello hello_of_worker_one(const Config& c) {
  ps::Hello hello;
  hello.worker = 1;
  hello.workers = 2;
  hello.staleness = c.staleness;
  hello.rule = ps::RuleParams::from(c);
  hello.tensors = {{"w", 1000}};
  return hello;
}

// Two more connections for a live id: the server holds one Hello per id, so
// the earlier waiting one is refused at once, naming the newer (held Hellos
// were unbounded: each connection for a live id kept its endpoint for 3 s).
TEST_P(PsFaultTest, ANewerHelloForAHeldIdRefusesTheHeldOne) {
  Config c = config();
  ServerGroup servers(1, 2, c);
  auto join = [&] { return connect_worker(servers.addresses(), c, 1, 2); };
  auto first = join();
  // The older Hello by hand, so that it is known to be sent first.
  auto context = transport::create_context({.transport = GetParam(), .secret = test_secret()});
  auto control = context->connect(transport::SockAddr::parse(servers.server(0).address()), kSetupTimeout);
  control->send_control(encode(hello_of_worker_one(c)), kSetupTimeout);
  std::this_thread::sleep_for(200ms);  // taken in and held
  std::string newer;
  EXPECT_EQ(error_code_of([&] { join(); }, &newer), Errc::kRefusedForNow);
  EXPECT_NE(newer.find("worker id 1 is already connected (waited 3 s"), std::string::npos) << newer;
  // Answered when the newer came, not 3 s after it was sent.
  const ps::Welcome older = ps::decode_welcome(control->recv_control(100ms), "the older Hello");
  EXPECT_EQ(older.accepted, ps::kRefusedForNow);
  EXPECT_NE(older.reason.find("worker id 1 connected again from"), std::string::npos) << older.reason;
  for (auto until = Clock::now() + 200ms; Clock::now() < until;) context->progress();  // as ~RawWorker
  control.reset();
  first.reset();
  servers.stop();
}

// A Hello held (its id still connected) when the server stops is told why:
// it met a closed connection, or, where the server object outlives run() (C,
// Python), silence until its timeout. A retry may pass: a stopped server may
// be restarted.
TEST_P(PsFaultTest, AHelloHeldWhenTheServerStopsIsToldWhy) {
  Config c = config();
  auto servers = std::make_unique<ServerGroup>(1, 2, c);
  auto first = connect_worker(servers->addresses(), c, 1, 2);
  LogWatch log;
  auto context = transport::create_context({.transport = GetParam(), .secret = test_secret()});
  auto control = context->connect(transport::SockAddr::parse(servers->server(0).address()), kSetupTimeout);
  control->send_control(encode(hello_of_worker_one(c)), kSetupTimeout);
  ASSERT_TRUE(log.wait_for("(worker 1) is held", 20s)) << "the second Hello of worker 1 was not held";
  std::thread stopping([&] { servers->stop(); });  // it may wait for the refused peer to close (below)
  ps::Welcome answer;
  try {
    answer = ps::decode_welcome(control->recv_control(5s), "the held Hello");
  } catch (const Error& e) {
    ADD_FAILURE() << "the held Hello was not answered: " << e.what();
  }
  EXPECT_EQ(answer.accepted, ps::kRefusedForNow);
  EXPECT_NE(answer.reason.find("the server is stopping"), std::string::npos) << answer.reason;
  for (auto until = Clock::now() + 200ms; Clock::now() < until;) context->progress();  // as ~RawWorker
  control.reset();
  stopping.join();
  servers.reset();  // its connections close: the worker's goodbye is not waited out
  first.reset();
}

// This process's resident memory (/proc/self/statm), 0 where it cannot be read.
uint64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

// A newer Hello of an id replaces the ticket of an older connection that has
// not reached its lanes yet: the ticket went only once the newer one's copy of
// the range was made (here 64 MB, DC-ASGD's backup), and a lane admitted
// the older connection meanwhile, then refused the newer as already
// connected: neither trained. The older one's lane hello is refused now.
TEST_P(PsFaultTest, ALaneRefusesATicketReplacedWhileTheNewerCopyIsMade) {
  constexpr uint64_t kBigFloats = uint64_t{16} << 20;
  Config c = config();
  c.rule = UpdateRule::kDcAsgdAdaptive;
  c.server_threads = 1;
  ServerOptions serve_on;
  serve_on.exit_when_done = false;
  ServerGroup servers(1, 2, c, serve_on);
  const std::string address = servers.server(0).address();
  auto context = transport::create_context({.transport = GetParam(), .secret = test_secret()});
  // One lane; a shard's version word each (the default 1 MiB shards).
  auto receive =
      context->allocate(ps::ReceiveLayout{1, kBigFloats / 262144 + 1, kBigFloats}.bytes(), Access::kRemoteWrite);
  auto hello_from = [&](transport::Endpoint& control) {
    ps::Hello hello;
    hello.worker = 1;
    hello.workers = 2;
    hello.staleness = c.staleness;
    hello.rule = ps::RuleParams::from(c);
    hello.tensors = {{"w", kBigFloats}};
    control.send_control(encode(hello), kSetupTimeout);
  };
  auto lane_of = [&](const ps::Welcome& w) {
    return context->connect(transport::SockAddr::parse(address).with_port(w.lanes.at(0).port), kSetupTimeout);
  };
  auto lane_hello = [&](transport::Endpoint& lane, const ps::Welcome& w) {
    lane.send_control(encode(ps::LaneHello{1, w.token, 0, receive->descriptor(Access::kRemoteWrite).serialize(), {}}),
                      kSetupTimeout);
    return ps::decode_lane_welcome(lane.recv_control(kSetupTimeout), address);
  };
  auto older_control = context->connect(transport::SockAddr::parse(address), kSetupTimeout);
  hello_from(*older_control);
  const ps::Welcome older = ps::decode_welcome(older_control->recv_control(kSetupTimeout), "the older Hello");
  ASSERT_EQ(older.accepted, ps::kAdmitted) << older.reason;
  // The newer Hello from another context, connected first; the older's
  // lane connects, and its LaneHello goes once the server is making the
  // newer one's copy (this process grew by 16 MB), within the lane's 5 s for
  // a LaneHello from its connect: a wait of 5 s on a loaded machine met the
  // connection closed, naming nothing.
  auto newer_context = transport::create_context({.transport = GetParam(), .secret = test_secret()});
  auto newer_control = newer_context->connect(transport::SockAddr::parse(address), kSetupTimeout);
  auto older_lane = lane_of(older);  // connected, its LaneHello not sent yet
  const auto lane_connected = Clock::now();
  const uint64_t before = resident_bytes();
  hello_from(*newer_control);
  // Or until the newer is answered first (refused, say, for memory).
  std::optional<std::vector<uint8_t>> early;
  bool copying = false;
  for (auto until = lane_connected + 4s; !copying && Clock::now() < until;) {
    if ((early = newer_control->try_recv_control(ps::kMaxHelloBytes))) break;
    copying = resident_bytes() >= before + (16u << 20);
    if (!copying) std::this_thread::sleep_for(100us);
  }
  ps::Welcome newer = early ? ps::decode_welcome(*early, "the newer Hello") : ps::Welcome{};
  ASSERT_TRUE(!early || newer.accepted == ps::kAdmitted) << "the newer Hello was refused: " << newer.reason;
  ASSERT_TRUE(copying || early) << "the newer Hello was neither answered nor copied for within 4 s";
  const ps::LaneWelcome older_answer = lane_hello(*older_lane, older);
  EXPECT_FALSE(older_answer.accepted) << "a lane admitted the older connection under a ticket being replaced";
  if (!early) newer = ps::decode_welcome(newer_control->recv_control(kSetupTimeout), "the newer Hello");
  ASSERT_EQ(newer.accepted, ps::kAdmitted) << newer.reason;
  auto newer_lane = lane_of(newer);
  const ps::LaneWelcome newer_answer = lane_hello(*newer_lane, newer);
  EXPECT_TRUE(newer_answer.accepted) << newer_answer.reason;
  for (auto until = Clock::now() + 200ms; Clock::now() < until;) {  // as ~RawWorker
    context->progress();
    newer_context->progress();
  }
  older_lane.reset();
  newer_lane.reset();
  older_control.reset();
  newer_control.reset();
  servers.stop();
}

// One server under two spellings in a worker's list: its probe answers carry
// one instance, so connect() names both entries before any Hello (it was
// refused as "worker id 0 is already connected" after a 3 s wait), and the
// server holds nothing for the worker.
TEST_P(PsFaultTest, OneServerListedTwiceIsNamedBeforeAnyHello) {
  Config c = config();
  ServerGroup servers(2, 1, c);
  const std::string a = servers.server(0).address();
  const std::string b = "localhost:" + a.substr(a.rfind(':') + 1);
  ClientOptions o = local_worker_options(a + "," + b, c);
  o.timeout = 20s;
  std::string what;
  EXPECT_EQ(error_code_of(
                [&] {
                  Client twice(o);
                  twice.declare("w", 100);
                  twice.connect();
                },
                &what),
            Errc::kInvalidArgument)
      << what;
  EXPECT_NE(what.find("servers 0 (" + a + ") and 1 (" + b + ") of the list are one server: list each server once"),
            std::string::npos)
      << what;
  EXPECT_EQ(servers.server(0).stats().workers_connected, 0u);
  // The list as it should be: the job runs.
  auto worker = connect_worker(servers.addresses(), c, 0, 1, 100);
  const std::vector<float> g(100, 1.0f);
  worker->push("w", g);
  worker->clock();
  worker.reset();
  servers.join();
}

// Answers every opening with one of the next transport version, as a server
// of a later release would; never returns.
[[noreturn]] void serve_another_transport_version(int port) {
  const auto listener = transport::TcpSocket::listen(transport::SockAddr::parse("127.0.0.1:" + std::to_string(port)));
  bootstrap::Open later{0, transport::random_nonce()};
  std::vector<uint8_t> opening = bootstrap::encode(later);
  const uint32_t version = bootstrap::kVersion + 1;
  std::memcpy(opening.data() + 4, &version, sizeof(version));  // after the magic
  for (;;) {
    transport::SockAddr peer;
    const transport::TcpSocket s = listener.try_accept(&peer);
    if (!s.valid()) {
      std::this_thread::sleep_for(5ms);
      continue;
    }
    try {
      static_cast<void>(s.recv_message(Clock::now() + 2s, "worker"));
      s.send_message(opening, Clock::now() + 2s, "worker");
      static_cast<void>(s.readable(2000));  // until the worker hangs up
    } catch (const Error&) {
    }
  }
}

// A server in its own process, on the port the test chose; it waits for 2
// workers, so a lone worker's BSP clock blocks.
// Extra "workers", "secret" or "transport-version": restarted another way (3
// workers, another secret, a later release's transport).
RDMAPS_TEST_PEER(standalone_server) {
  const std::string change = args.extra.empty() ? "" : args.extra[0];
  if (change == "transport-version") serve_another_transport_version(args.port);
  ServerOptions o;
  o.workers = change == "workers" ? 3 : 2;
  o.config = fault_config(args.transport);
  o.config.staleness = 0;
  o.config.secret = change == "secret" ? test_secret() + "-another" : test_secret();
  return serve_as_peer(args, o);
}

// A worker of a standalone server process (BSP, waiting for 2 workers) that
// has trained one step: where the killed-server tests start.
struct OneStepAgainstAServerProcess {
  PeerProcess server;
  std::string address;
  std::unique_ptr<Client> client;
  std::vector<float> w = std::vector<float>(kFaultFloats, 1.0f);
};

OneStepAgainstAServerProcess one_step_against_a_server_process(transport::TransportKind kind) {
  int port = 0;
  PeerProcess server = listening_peer("standalone_server", kind, 1, {}, &port);
  OneStepAgainstAServerProcess run{std::move(server), "127.0.0.1:" + std::to_string(port), nullptr};
  ClientOptions o;
  o.servers = {run.address};
  o.config = fault_config(kind);
  o.config.staleness = 0;
  o.config.secret = test_secret();
  o.timeout = 60s;
  run.client = connect_when_up(o, "w", kFaultFloats);
  if (!run.client) return run;
  run.client->init("w", run.w);
  run.client->push("w", run.w);
  run.client->pull("w", run.w);
  return run;
}

// A push after its server died: over tcp the push fails, over shared memory
// it may return (a put lands in memory only the dead process mapped; a
// one-sided write has no receipt) and the clock after it fails. Either way
// the error is "peer gone" naming the server, at once: UCX's "Endpoint
// timeout" for a dead peer used to come out as a timeout.
TEST_P(PsFaultTest, APushToAKilledServerIsReportedAsPeerGoneByThePushOrTheClockAfterIt) {
  auto run = one_step_against_a_server_process(GetParam());
  ASSERT_TRUE(run.client) << "the server process did not come up";
  run.server.kill_now();
  std::this_thread::sleep_for(300ms);  // its sockets have closed
  std::string what;
  const auto start = Clock::now();
  std::optional<Errc> code;
  for (auto step :
       {+[](Client&c, std::vector<float>&v) { c.push("w", v); }, +[](Client&c, std::vector<float>&) { c.clock(); }}) {
    try {
      step(*run.client, run.w);
    } catch (const Error& e) {
      code = e.code();
      what = e.what();
      break;
    }
  }
  ASSERT_TRUE(code) << "neither the push nor the clock after it failed";
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(*code, Errc::kPeerGone) << what;
  EXPECT_NE(what.find(run.address), std::string::npos) << what;
  EXPECT_LT(seconds, 30.0) << "detected only by the timeout";
  // Without --reconnect it stays gone: later calls fail too (over shared
  // memory pushes went on "completing" into the dead process's memory, and
  // were counted as sent, not lost).
  const uint64_t pushes = run.client->stats().pushes;
  EXPECT_EQ(error_code_of([&] { run.client->push("w", run.w); }, &what), Errc::kPeerGone) << what;
  EXPECT_NE(what.find("--reconnect is off"), std::string::npos) << what;
  EXPECT_EQ(error_code_of([&] { run.client->clock(); }, &what), Errc::kPeerGone) << what;
  EXPECT_EQ(run.client->stats().pushes, pushes) << "a push to a server known to be gone was counted as sent";
}

// kill -9 of the server while its worker waits (at the clock, then in a
// pull): the worker fails with "peer gone" naming the server, seconds after
// the kill, not after its 60 s timeout (it used to block 121 s in a put).
TEST_P(PsFaultTest, AServerKilledMidRunIsReportedByItsWorkerNamingIt) {
  auto run = one_step_against_a_server_process(GetParam());
  ASSERT_TRUE(run.client) << "the server process did not come up";
  auto& server = run.server;
  auto& client = run.client;
  auto& w = run.w;
  const std::string& address = run.address;
  std::thread killer([&] {
    std::this_thread::sleep_for(300ms);  // the worker is waiting at its clock by then
    server.kill_now();
  });
  std::string what;
  const auto start = Clock::now();
  EXPECT_EQ(error_code_of([&] { client->clock(); }, &what), Errc::kPeerGone) << what;
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  killer.join();
  EXPECT_NE(what.find(address), std::string::npos) << what;
  EXPECT_NE(what.find("clock"), std::string::npos) << "the error does not say what was waited for: " << what;
  EXPECT_LT(seconds, 30.0) << "detected only by the timeout";
  std::printf("[ info     ] clock wait: server death reported %.2f s after the wait began (kill at 0.3 s)\n", seconds);
  // Every later wait on it fails the same way.
  EXPECT_EQ(error_code_of([&] { client->pull("w", w); }, &what), Errc::kPeerGone) << what;
  EXPECT_NE(what.find(address), std::string::npos) << what;
}

// A server of one lane whose address space is capped, once it applied its
// first update, at what it maps then and 64 MiB more: the snapshot of its
// 256 MiB range (extra[0]: the checkpoint directory), asked for at the
// third push, cannot be made. 7: run() failed naming the lane; 0: it ended well.
constexpr size_t kCappedFloats = size_t{64} << 20;
RDMAPS_TEST_PEER(capped_server) {
  ServerOptions o;
  o.listen = "127.0.0.1:" + std::to_string(args.port);
  o.config = fault_config(args.transport);
  o.config.shard_floats = 1u << 20;
  o.config.server_threads = 1;
  o.config.secret = test_secret();
  o.config.checkpoint_dir = args.extra.at(0);
  o.config.checkpoint_every_updates = 3 * (kCappedFloats / o.config.shard_floats);
  Server server(o);
  std::atomic<bool> over{false};
  std::thread capper([&] {
    while (!over.load() && server.stats().pushes == 0) std::this_thread::sleep_for(5ms);
    std::ifstream status("/proc/self/status");
    uint64_t kib = 0;
    for (std::string key; status >> key;)
      if (key == "VmSize:" && status >> kib) break;
    const rlimit cap{(kib << 10) + (64u << 20), (kib << 10) + (64u << 20)};
    if (::setrlimit(RLIMIT_AS, &cap) == 0) std::ofstream(args.extra.at(0) + "/capped") << kib;  // the test goes on
  });
  int rc = 0;
  try {
    server.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "capped_server: run() failed: %s\n", e.what());
    rc = std::string(e.what()).find("its lane 0 failed") != std::string::npos ? 7 : 8;
  }
  over = true;
  capper.join();
  return rc;
}

// A lane whose thread fails (here: no memory for a checkpoint's snapshot)
// stops the server, which says why, and its worker hears of it at once, as
// peer gone: the lane only logged it, its workers waited out their timeout
// for credits, and the server served on, never to exit.
TEST_P(PsFaultTest, ALaneThatFailsStopsTheServerAndItsWorkersHearOfItAtOnce) {
  if (kUnderSanitizer) GTEST_SKIP() << "a sanitizer's shadow memory does not fit an address-space cap";
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("rdmaps-capped-" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(dir);
  int port = 0;
  PeerProcess server = listening_peer("capped_server", GetParam(), 1, {dir}, &port);
  ClientOptions o;
  o.servers = {"127.0.0.1:" + std::to_string(port)};
  o.config = fault_config(GetParam());
  o.config.shard_floats = 1u << 20;
  o.config.secret = test_secret();
  o.timeout = 60s;
  auto client = connect_when_up(o, "w", kCappedFloats);
  ASSERT_TRUE(client) << "the server process did not come up";
  const std::vector<float> g(kCappedFloats, 0.0f);
  client->push("w", g);
  client->clock();
  for (auto until = Clock::now() + 20s; !std::filesystem::exists(dir + "/capped") && Clock::now() < until;)
    std::this_thread::sleep_for(5ms);
  ASSERT_TRUE(std::filesystem::exists(dir + "/capped")) << "the server did not cap its memory";
  std::string what;
  const auto start = Clock::now();
  const auto code = error_code_of(
      [&] {
        for (int i = 0; i < 20; ++i) {
          client->push("w", g);
          client->clock();
        }
      },
      &what);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(code, Errc::kPeerGone) << what;
  EXPECT_LT(seconds, 30.0) << "heard of only by the timeout";
  EXPECT_EQ(server.wait(30s), 7) << "the server did not stop with an error naming the lane";
  client.reset();
  std::filesystem::remove_all(dir);
}

// One of `servers` servers (extra[0]: its index, extra[1]: how many), 3 lanes.
RDMAPS_TEST_PEER(lane_server) {
  ServerOptions o;
  o.index = static_cast<uint32_t>(std::stoul(args.extra.at(0)));
  o.servers = static_cast<uint32_t>(std::stoul(args.extra.at(1)));
  o.config = fault_config(args.transport);
  o.config.server_threads = 3;
  // Serving on when the worker leaves: connect_when_up's attempt that reached
  // this server while the other was still starting leaves cleanly, and a
  // server that exits then refuses every later attempt (an ASan run's flake).
  return serve_as_peer(args, o);
}

// An SGD server of one lane and 1 M-float shards that serves on when its
// workers left; with "landing", told --put-landing on (it plans a copy of
// its range per worker), else given its worker count, if any, and a file
// its log lines are appended to.
constexpr uint32_t kBigShard = 1u << 20;
RDMAPS_TEST_PEER(one_lane_server) {
  ServerOptions o;
  o.config = sgd_config(args.transport, 0.05f, kBigShard);
  if (!args.extra.empty() && args.extra[0] == "landing") {
    o.config.push_path = PushPath::kPut;
    o.config.put_landing = PutLanding::kOn;
  } else if (!args.extra.empty()) {
    o.workers = static_cast<uint32_t>(std::stoul(args.extra[0]));
  }
  if (args.extra.size() > 1)
    set_log_sink([path = args.extra[1]](LogLevel, const std::string& line) {
      std::ofstream(path, std::ios::app) << line << '\n';
    });
  o.config.server_threads = 1;
  return serve_as_peer(args, o);
}

// Resident memory of process `pid` in bytes (VmRSS), 0 where unknown.
uint64_t resident_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

// How much `pid`'s resident memory grew past `from`, once below `bound` or
// `within` passed (memory is given back by another thread, a moment later);
// said in MiB.
uint64_t resident_growth(pid_t pid, uint64_t from, uint64_t bound, Clock::duration within) {
  uint64_t grew = 0;
  for (auto until = Clock::now() + within; Clock::now() < until; std::this_thread::sleep_for(20ms)) {
    grew = resident_bytes(pid) - from;
    if (grew < bound) break;
  }
  std::printf("[ info     ] the server's resident memory grew by %.0f MiB (range: 64 MiB)\n", grew / 1048576.0);
  return grew;
}

// The control thread makes a worker's copy by the server's --put-landing;
// a worker that offered no landing (its own --put-landing off) left its copy,
// faulted in, unused until its id was admitted again: the server's range
// once more per worker. The lane now lets it go.
TEST(PsLanding, ACopyMadeForLandingsTheWorkerDidNotOfferIsFreed) {
  if (!std::filesystem::exists("/proc/self/status")) GTEST_SKIP() << "needs /proc to read a process's memory";
  // A fresh VM's sanitizer build held 178-180 MiB against the bound's 176, before and after session 64's
  // changes (149 in the plain build): the plain build checks it.
  if (kUnderSanitizer) GTEST_SKIP() << "bounded by a server's resident memory, which a sanitizer's shadow adds to";
  constexpr size_t kFloats = size_t{16} << 20;  // 64 MiB: the copy
  int port = 0;
  PeerProcess server = listening_peer("one_lane_server", transport::TransportKind::kShm, 1, {"landing"}, &port);
  ClientOptions o;
  o.servers = {"127.0.0.1:" + std::to_string(port)};
  o.config = sgd_config(transport::TransportKind::kShm, 0.05f, kBigShard);
  o.config.push_path = PushPath::kPut;
  o.config.put_landing = PutLanding::kOff;
  o.config.secret = test_secret();
  o.timeout = 10s;
  const uint64_t before = resident_bytes(server.pid());
  std::unique_ptr<Client> client = connect_when_up(o, "w", kFloats);
  ASSERT_TRUE(client) << "the server process did not come up";
  std::vector<float> w(kFloats, 1.0f);
  client->init("w", w);
  client->pull("w", w);
  // Resident: the parameters, the worker's receive region (shared memory the
  // server maps and writes its pulls into), the inbox (16 MiB), UCX's own
  // (~9 MiB): 153 MiB here, 217 with the copy. The copy is freed by the
  // control thread once the lane let go of it.
  constexpr uint64_t kRange = kFloats * sizeof(float), kBound = kRange * 5 / 2 + (16u << 20);
  EXPECT_LT(resident_growth(server.pid(), before, kBound, 10s), kBound)
      << "an unused copy of the range stayed resident";
}

// Pulls a 64 MiB model over and over, until killed; worker 0 sets it first.
// With extra[2] "stop", from its second pull on it stops itself (SIGSTOP)
// extra[3] ms into each pull: the server's write-back to it is under way
// then (a pull takes 20 ms and more here), and stays so while it is stopped.
constexpr size_t kBigModel = size_t{16} << 20;
RDMAPS_TEST_PEER(pulling_worker) {
  Client client(worker_options(args, sgd_config(args.transport, 0.05f, kBigShard)));
  client.declare("w", kBigModel);
  client.connect();
  std::vector<float> w(kBigModel, 1.0f);
  if (args.extra.at(1) == "0") client.init("w", w);
  client.pull("w", w);
  const bool stop = args.extra.size() > 2 && args.extra[2] == "stop";
  for (;;) {
    std::thread stopper;
    if (stop)
      stopper = std::thread([ms = std::stoi(args.extra[3])] {
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        ::kill(::getpid(), SIGSTOP);
      });
    client.pull("w", w);
    if (stopper.joinable()) stopper.join();
  }
}

// A worker killed while the server's write-backs to it were under way (it
// had stopped reading: SIGSTOP, then SIGKILL) could leave them in flight for
// good over tcp (no peer-failure handling; two kills in three of those
// stopped with bytes queued to them, session 64), and with
// them its copy of the range and its inbox, until the server exited: 64 MiB
// more per such kill. Their pages go back 5 s on, and the server says so.
// Workers are killed in turn until one such kill was seen (the others' sends
// ended: their memory went at once, as it should). Each stops itself a
// moment into a pull: stopped by the test at a random moment, most were
// between pulls under load, and 8 tries once all missed (session 66).
TEST(PsMemory, AKilledWorkersMemoryHeldBySendsThatNeverEndIsGivenBack) {
  if (!std::filesystem::exists("/proc/self/status")) GTEST_SKIP() << "needs /proc to read a process's memory";
  // Its server, at -O0 under ASan, waited past the 45 s given (in CI's second run): the plain build checks it.
  if (kUnderSanitizer) GTEST_SKIP() << "timed by a server's resident memory, which a sanitizer's build holds longer";
  // Each departure leaves some MiB resident in the server (session 66: 85 MiB after the 1st kill, 109
  // after the 19th): each kill is bounded against the memory before its worker, and tries go on for a
  // minute at most (here the first to the fifth exercised it, under load).
  constexpr uint32_t kTries = 24;
  const auto tries_until = Clock::now() + 60s;
  const std::string log = testing::TempDir() + "rdmaps-ps-memory-" + std::to_string(getpid()) + ".log";
  std::remove(log.c_str());
  int port = 0;
  PeerProcess server =
      listening_peer("one_lane_server", transport::TransportKind::kTcp, 1, {std::to_string(kTries), log}, &port);
  constexpr uint64_t kRange = kBigModel * sizeof(float);
  auto gave_back = [&] {
    std::ifstream in(log);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.find("gave back the ") != std::string::npos;
  };
  uint32_t id = 0;
  for (; id < kTries && !gave_back() && Clock::now() < tries_until; ++id) {
    // Before: the parameters from the first worker on; with a worker pulling, its copy too (write-backs over tcp go
    // from it).
    const uint64_t before = resident_bytes(server.pid());
    // Stopped a moment 1 to 20 ms into a pull, a different one each try.
    PeerProcess worker(
        "pulling_worker", transport::TransportKind::kTcp, 0, 1,
        {"127.0.0.1:" + std::to_string(port), std::to_string(id), "stop", std::to_string(1 + id * 7 % 20)});
    const uint64_t pulling_at = id == 0 ? kRange * 3 / 2 : kRange / 2;
    bool pulling = false;
    for (auto until = Clock::now() + 60s; !pulling && Clock::now() < until && worker.running();
         std::this_thread::sleep_for(50ms))
      pulling = resident_bytes(server.pid()) - before > pulling_at;
    ASSERT_TRUE(pulling) << "worker " << id << " did not pull";
    // Its socket fills: the server's sends stay under way, if it stopped with
    // the server's bytes queued to it. Stopped before its pull's request went
    // (its thread not yet run), with none queued, it is woken to stop again.
    auto queued = [&] {
      uint64_t bytes = 0;
      for (const auto& s : established_tcp_sockets("/proc/" + std::to_string(server.pid()))) bytes += s.send_queue;
      return bytes;
    };
    int stops = 0;
    for (;; ++stops) {
      for (auto until = Clock::now() + 30s; !is_stopped(worker.pid()) && Clock::now() < until;)
        std::this_thread::sleep_for(5ms);
      ASSERT_TRUE(is_stopped(worker.pid())) << "worker " << id << " did not stop itself in a pull";
      std::this_thread::sleep_for(300ms);
      if (stops == 30 || queued() > 0) break;
      ASSERT_EQ(kill(worker.pid(), SIGCONT), 0);
    }
    // Signed: a departure before this one may give its pages back meanwhile.
    auto above_before = [&] {
      return static_cast<int64_t>(resident_bytes(server.pid())) - static_cast<int64_t>(before);
    };
    const int64_t held = above_before();
    worker.kill_now();
    // Before the first worker the server held no parameters (64 MiB).
    const int64_t bound = (id == 0 ? kRange : 0) + kRange / 2;
    int64_t now = held;
    // The lane may first wait out kIoTimeout (30 s) on a send to the stopped worker.
    for (auto until = Clock::now() + 45s; Clock::now() < until; std::this_thread::sleep_for(100ms)) {
      now = above_before();
      if (now < bound) break;
    }
    std::printf(
        "[ info     ] worker %u (stopped %d time(s)): the server held %.0f MiB more with it than before it, %.0f MiB "
        "after it was killed (range: 64 MiB)%s\n",
        id, stops + 1, held / 1048576.0, now / 1048576.0, gave_back() ? ", given back by the lane" : "");
    EXPECT_LT(now, bound) << "killed worker " << id << "'s copy stayed resident";
  }
  EXPECT_TRUE(gave_back()) << "in " << id << " kills no send stayed under way: the give-back was not exercised";
  EXPECT_TRUE(server.running()) << "the server died";
  std::remove(log.c_str());
}

// Two lanes over tcp, every worker with a copy of each lane's range.
RDMAPS_TEST_PEER(two_lane_server) {
  ServerOptions o;
  o.config = sgd_config(args.transport, 0.05f, kBigShard);
  o.workers = 2;
  o.config.server_threads = 2;
  return serve_as_peer(args, o);
}

// A worker killed after it reached lane 0 and before lane 1: the control
// thread had made its copy of lane 1's range (32 MiB here) for lane 1 to
// take, and it stayed mapped until the worker's id was admitted again, while
// the memory budget counted it free. Once no lane holds the worker (5 s
// after its admission), what its lanes did not take is freed.
TEST(PsMemory, ACopyForALaneAKilledWorkerNeverReachedIsFreed) {
  if (!std::filesystem::exists("/proc/self/status")) GTEST_SKIP() << "needs /proc to read a process's memory";
  // Its -O0 server holds 107 MiB where the plain build's holds 77: the plain build checks it.
  if (kUnderSanitizer) GTEST_SKIP() << "measured by a server's resident memory, which a sanitizer's build inflates";
  int port = 0;
  PeerProcess server = listening_peer("two_lane_server", transport::TransportKind::kTcp, 1, {}, &port);
  const uint64_t start = resident_bytes(server.pid());
  constexpr uint64_t kRange = kBigModel * sizeof(float);
  connect_to_lane_zero_only_and_die(transport::TransportKind::kTcp, "127.0.0.1:" + std::to_string(port), 1, 2, 0,
                                    kBigModel);
  if (HasFatalFailure()) return;
  // Then: the parameters (64 MiB), UCX's own (77 MiB in all here). With lane 1's copy: 32 MiB more (109).
  constexpr uint64_t kBound = kRange + kRange * 3 / 8;
  EXPECT_LT(resident_growth(server.pid(), start, kBound, 30s), kBound)
      << "the copy made for the lane the worker never reached stayed resident";
  EXPECT_TRUE(server.running()) << "the server died";
}

// Trains one step on every lane, then idles (to be stopped by the test).
RDMAPS_TEST_PEER(idle_worker) { return train_one_step_then_idle(args, fault_config(args.transport), kFaultFloats); }

// A server stopping while its worker is stopped (SIGSTOP) closes every lane's
// connection at once and waits for none of the acknowledgements, which the
// stopped worker cannot send: it took 2 s (the close deadline it had; 6.2 s
// for 3 lanes over tcp before that was shared), ~0.01 s now.
TEST_P(PsFaultTest, AServerStoppingBesideAStoppedWorkerWaitsForNoAcknowledgement) {
  Config c = fault_config(GetParam());
  c.server_threads = 3;
  ServerOptions keep;
  keep.exit_when_done = false;
  ServerGroup servers(1, 1, c, keep);
  PeerProcess worker("idle_worker", GetParam(), 0, 1, {servers.addresses(), "0"});
  for (auto until = Clock::now() + 30s; servers.server(0).stats().pulls < 3 && Clock::now() < until;)
    std::this_thread::sleep_for(10ms);
  ASSERT_GE(servers.server(0).stats().pulls, 3u) << "the worker did not pull from every lane";
  ASSERT_EQ(kill(worker.pid(), SIGSTOP), 0);
  const auto start = Clock::now();
  servers.stop();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  kill(worker.pid(), SIGCONT);
  std::printf("[ info     ] stopping a 3-lane server beside a stopped worker took %.2f s\n", seconds);
  EXPECT_LT(seconds, 1.5) << "the server waited for the stopped worker to acknowledge its closes";
}

// A worker of this process, idle while its server stops (as one waiting for
// the server's thread to return is), drives no UCX to acknowledge the
// server's closes, and the stopped server (its run() returned, the object
// alive) drives none to acknowledge the worker's. Stopping took 2 s over tcp,
// and the worker's leave then 5 s; neither waits on the other now. The worker
// still hears that the server left, at its next call.
TEST_P(PsFaultTest, AServerAndAnIdleWorkerOfOneProcessLeaveEachOtherWithoutWaiting) {
  Config c = fault_config(GetParam());
  ServerOptions keep;
  keep.exit_when_done = false;
  ServerGroup servers(1, 1, c, keep);
  auto client = std::make_unique<Client>(local_worker_options(servers.addresses(), c));
  std::vector<float> w(kFaultFloats, 1.0f);
  client->declare("w", w.size());
  client->connect();
  client->init("w", w);
  client->push("w", w);
  client->clock();
  auto start = Clock::now();
  servers.stop();
  const double stop_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::string what;
  EXPECT_EQ(error_code_of([&] { client->pull("w", w); }, &what), Errc::kPeerGone) << what;
  EXPECT_NE(what.find("server " + servers.server(0).address() + " closed the connection"), std::string::npos) << what;
  start = Clock::now();
  client.reset();
  const double leave_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("[ info     ] the server stopped in %.2f s, the worker left it in %.2f s\n", stop_seconds, leave_seconds);
  EXPECT_LT(stop_seconds, 1.5) << "the server waited for the idle worker to acknowledge its closes";
  EXPECT_LT(leave_seconds, 2.5) << "the worker waited for the stopped server to acknowledge its closes";
}

// A worker leaving servers that stopped (SIGSTOP: alive, silent) returns
// within its leave timeout (the shorter of 5 s and its wait bound; 2 s here,
// which keeps the test short), not after a wait per lane and server (it took
// the timeout plus 2 s for each of the 6 endpoints' close).
TEST_P(PsFaultTest, AWorkerLeavingStoppedServersReturnsWithinItsLeaveTimeout) {
  std::vector<PeerProcess> servers;
  std::vector<std::string> addresses;
  for (int i = 0; i < 2; ++i) {
    int port = 0;
    servers.push_back(listening_peer("lane_server", GetParam(), 1, {std::to_string(i), "2"}, &port));
    addresses.push_back("127.0.0.1:" + std::to_string(port));
  }
  ClientOptions o;
  o.servers = addresses;
  o.config = fault_config(GetParam());
  o.config.secret = test_secret();
  o.timeout = 2s;  // also the leave timeout: min(timeout, 5 s)
  std::unique_ptr<Client> client = connect_when_up(o, "w", 2 * kFaultFloats);
  ASSERT_TRUE(client) << "the server processes did not come up (still running: " << servers[0].running() << ", "
                      << servers[1].running() << ")";
  std::vector<float> w(2 * kFaultFloats, 1.0f);
  client->init("w", w);
  client->push("w", w);
  client->pull("w", w);
  // Every thread stopped: a lane still running then read the Bye (seen under ASan).
  for (auto& s : servers) ASSERT_TRUE(stop_process(s.pid())) << "server " << s.pid() << " did not stop";
  const auto start = Clock::now();
  OutputCapture log;
  client.reset();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const std::string said = log.end();
  for (auto& s : servers) kill(s.pid(), SIGCONT);
  std::printf("[ info     ] leaving two stopped servers of 3 lanes each took %.2f s\n", seconds);
  // The bug took ~14 s (the timeout, then 2 s per close): a loose bound still tells, under load too.
  EXPECT_LT(seconds, 8.0) << "~Client waited past its 2 s leave timeout";
  // Its last pushes may be lost there: said, not returned from as if they were in.
  for (const std::string& a : addresses)
    EXPECT_NE(said.find("server " + a +
                        " lane 0 did not acknowledge this worker's leave within 2.0 s: its last "
                        "pushes there may not be applied"),
              std::string::npos)
        << said;
}

// A worker whose push to a stopped server timed out with its send still
// under way (tcp: the socket full) leaves within its leave timeout too: the
// transport's end gave that send another second (a 5 s leave took 6.1 s).
TEST(ClientLeave, ALeaveWithASendStillUnderWayEndsWithinItsLeaveTimeout) {
  int port = 0;
  PeerProcess server = listening_peer("one_lane_server", transport::TransportKind::kTcp, 1, {}, &port);
  ClientOptions o =
      local_worker_options("127.0.0.1:" + std::to_string(port), fault_config(transport::TransportKind::kTcp));
  o.config.shard_floats = kBigShard;
  o.config.staleness = 0;
  o.timeout = 2s;  // also the leave timeout: min(timeout, 5 s)
  std::unique_ptr<Client> client = connect_when_up(o, "w", kBigModel);
  ASSERT_TRUE(client) << "the server process did not come up";
  std::vector<float> w(kBigModel, 1.0f);
  client->init("w", w);
  client->pull("w", w);
  ASSERT_TRUE(stop_process(server.pid()));
  // Pushes until one fails: a stopped peer's socket takes a few MiB of one, not 64.
  std::string what;
  for (int i = 0; i < 8 && what.empty(); ++i) error_code_of([&] { client->push("w", w); }, &what);
  EXPECT_FALSE(what.empty()) << "8 pushes of 64 MiB went into a stopped server";
  OutputCapture log;
  const auto start = Clock::now();
  client.reset();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const std::string said = log.end();
  kill(server.pid(), SIGCONT);
  std::printf("[ info     ] leaving with a send under way took %.2f s (leave timeout 2 s)\n", seconds);
  EXPECT_NE(said.find("abandoned send(s) still in flight at shutdown"), std::string::npos)
      << "no send was under way: the end's grace was not exercised\n"
      << said;
  // 2 s, then the closes' 0.1 s; the transport's second more made it 3.1 s
  // at least. Not under a sanitizer: its teardown alone is slower.
  if (!kUnderSanitizer) {
    EXPECT_LT(seconds, 3.0) << said;
  }
}

// A push the server rejects (a NaN under check_nan) returned as if applied,
// and nothing on the worker said otherwise: its stats count it now.
TEST_P(PsFaultTest, APushTheServerRejectsIsCountedByTheWorker) {
  const Config c = fault_config(GetParam());
  ServerGroup servers(1, 1, c);
  Client client(local_worker_options(servers.addresses(), c));
  client.declare("w", kFaultShard);
  client.connect();
  std::vector<float> w(kFaultShard, 1.0f), got(kFaultShard);
  client.init("w", w);
  std::vector<float> bad(kFaultShard, 1.0f);
  bad[kFaultShard / 2] = std::nanf("");
  client.push("w", bad);
  client.pull("w", got);  // after the push: its lane took it in, and said so with the credit
  EXPECT_EQ(got, w) << "the rejected push was applied";
  EXPECT_EQ(client.messages_rejected(), 1u);
  client.push("w", std::vector<float>(kFaultShard, 0.0f));
  client.pull("w", got);
  EXPECT_EQ(client.messages_rejected(), 1u) << "a good push counted as rejected";
  EXPECT_EQ(servers.server(0).stats().rejected, 1u);
}

// On the bf16 wire the server judges the bits it got (it widened the piece
// first): an Inf or a NaN is refused, the largest finite bf16 is taken.
TEST_P(PsFaultTest, ABf16PushIsJudgedFiniteOnItsBits) {
  Config c = fault_config(GetParam());
  c.wire = WireFormat::kBf16;
  c.learning_rate = 1.0f;
  ASSERT_TRUE(c.check_nan);
  ServerGroup servers(1, 1, c);
  Client client(local_worker_options(servers.addresses(), c));
  client.declare("w", kFaultShard);
  client.connect();
  const std::vector<float> zeros(kFaultShard, 0.0f);
  client.init("w", zeros);
  std::vector<float> got(kFaultShard);
  uint64_t refused = 0;
  for (const float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                          std::nanf(""), 3.4e38f /* finite, rounds to Inf in bf16 */}) {
    std::vector<float> g(kFaultShard, 0.0f);
    g[kFaultShard - 1] = bad;
    client.push("w", g);
    client.pull("w", got);
    EXPECT_EQ(client.messages_rejected(), ++refused) << bad << " was taken";
  }
  EXPECT_EQ(got, zeros) << "a refused push was applied";
  const float largest = math::from_bf16(0x7f7f);  // 3.39e38, finite
  std::vector<float> g(kFaultShard, 0.0f);
  g[0] = largest;
  client.push("w", g);
  client.pull("w", got);
  EXPECT_EQ(client.messages_rejected(), refused) << "the largest finite bf16 was refused";
  EXPECT_EQ(got[0], -largest);
}

// A worker that sends NaNs every step (--check-nan) wrote a log line per
// push from the lane's thread (5,000 in 0.04 s); the lines are limited as
// refusals are, and the count stays exact.
TEST_P(PsFaultTest, RejectedMessagesAreLoggedAtMostTenASecondAndAllCounted) {
  const Config c = fault_config(GetParam());
  ServerGroup servers(1, 1, c);
  Client client(local_worker_options(servers.addresses(), c));
  client.declare("w", kFaultShard);
  client.connect();
  std::vector<float> w(kFaultShard, 1.0f);
  client.init("w", w);
  const std::vector<float> bad(kFaultShard, std::nanf(""));
  constexpr uint64_t kBad = 50;
  OutputCapture log;
  for (uint64_t i = 0; i < kBad; ++i) client.push("w", bad);
  client.pull("w", w);  // the lane took them all in
  // The rest are said once their second is over, though no rejection follows (it waited for the next one).
  std::string said;
  for (auto until = Clock::now() + 10s; Clock::now() < until; std::this_thread::sleep_for(100ms))
    if (log.text().find("more messages rejected within that second") != std::string::npos) break;
  said = log.end();
  const size_t more = said.find("more messages rejected within that second (not logged one by one)");
  ASSERT_NE(more, std::string::npos) << said;
  // Named by its lane: each lane's count looked alike.
  EXPECT_EQ(said.compare(said.rfind('\n', more) + 1, 23, "rdmaps-server: lane 0: "), 0) << said;
  EXPECT_EQ(client.messages_rejected(), kBad);
  EXPECT_EQ(servers.server(0).stats().rejected, kBad);
  size_t lines = 0;
  for (size_t at = said.find("rejected a message from"); at != std::string::npos;
       at = said.find("rejected a message from", at + 1))
    ++lines;
  EXPECT_GE(lines, 1u) << said;
  // 50 pushes take well under a second here; on a machine that slow, two windows' worth.
  EXPECT_LE(lines, 20u) << "every rejected message was logged:\n" << said;
}

// Memory registered while this worker's pushes are being rejected is still
// taken: register_memory() waited for a landing region until the lane's
// count of rejections grew, and a rejected push (NaN, --check-nan) counted;
// the region, not taken yet, was reported refused and never offered again,
// so every pull into it was copied. The inbox is full of rejected pushes
// (the server stopped), so the offer waits for a credit behind them.
TEST_P(PsFaultTest, MemoryRegisteredWhilePushesAreRejectedIsStillTaken) {
  int port = 0;
  PeerProcess server = listening_peer("lane_server", GetParam(), 1, {"0", "1"}, &port);
  ClientOptions o;
  o.servers = {"127.0.0.1:" + std::to_string(port)};
  o.config = fault_config(GetParam());  // --check-nan, as the server's
  o.config.secret = test_secret();
  o.config.push_path = PushPath::kPut;  // landing regions are offered on the put path
  o.config.put_landing = PutLanding::kOn;
  o.timeout = 10s;
  std::unique_ptr<Client> client = connect_when_up(o, "w", kFaultShard);  // one shard: one lane, never gathered
  ASSERT_TRUE(client) << "the server process did not come up";
  std::vector<float> w(kFaultShard, 1.0f);
  client->init("w", w);
  client->pull("w", w);
  ASSERT_TRUE(stop_process(server.pid()));
  const std::vector<float> nan(kFaultShard, std::nanf(""));
  for (uint32_t i = 0; i < o.config.inbox_slots; ++i) client->push("w", nan);  // every credit
  std::thread resume([&] {
    std::this_thread::sleep_for(300ms);
    kill(server.pid(), SIGCONT);
  });
  std::vector<float> target(kFaultShard);
  OutputCapture log;
  client->register_memory(target);
  resume.join();
  client->pull("w", target);
  const std::string said = log.end();
  EXPECT_EQ(client->stats().pull_bytes_in_place, kFaultShard * sizeof(float))
      << "the pull into registered memory was copied: its region was not taken\n"
      << said;
  EXPECT_EQ(said.find("refused landing region"), std::string::npos) << said;
  EXPECT_EQ(target, w) << "the rejected pushes changed the parameters";
}

// A 3-lane server of 1 MiB shards: a push of a few MiB keeps requests in
// flight (over tcp) while the server is stopped.
constexpr uint32_t kWholeShard = 262144;
RDMAPS_TEST_PEER(big_shard_server) {
  ServerOptions o;
  o.config = fault_config(args.transport);
  o.config.shard_floats = kWholeShard;
  o.config.server_threads = 3;
  o.workers = 2;
  o.log_connections = false;
  return serve_as_peer(args, o);
}

// A worker of big_shard_server's job at `port`, its calls bounded by `timeout`.
ClientOptions big_shard_client(transport::TransportKind kind, int port, std::chrono::milliseconds timeout,
                               uint32_t worker = 0) {
  ClientOptions o;
  o.servers = {"127.0.0.1:" + std::to_string(port)};
  o.worker = worker;
  o.config = fault_config(kind);
  o.config.shard_floats = kWholeShard;
  o.config.secret = test_secret();
  o.timeout = timeout;
  return o;
}

// A push to a stopped server (SIGSTOP) with requests in flight on every lane
// ends by one timeout of the client, not one per request (each waited its
// own: 10 s for a 2 s timeout), and interrupt() from another thread ends it
// at once (it waited out those timeouts and then said "timeout").
TEST_P(PsFaultTest, APushToAStoppedServerEndsByOneTimeoutAndInterruptEndsItAtOnce) {
  int port = 0;
  PeerProcess server = listening_peer("big_shard_server", GetParam(), 1, {}, &port);
  constexpr size_t kFloats = 16 * kWholeShard;  // 16 pieces over 3 lanes of 4 inbox slots
  auto connect = [&](uint32_t worker, std::chrono::milliseconds timeout) {
    return connect_when_up(big_shard_client(GetParam(), port, timeout, worker), "w", kFloats);
  };
  auto timing_out = connect(0, 1s), interrupted = connect(1, 60s);
  ASSERT_TRUE(timing_out && interrupted) << "the server process did not come up";
  std::vector<float> g(kFloats, 0.0f);
  timing_out->push("w", g);
  interrupted->push("w", g);
  // Every thread stopped: lanes still running took in every push over shm,
  // and none timed out (a loaded clean-clone run).
  ASSERT_TRUE(stop_process(server.pid())) << "the server did not stop";
  auto push_then_clock = [&](Client& c) {
    for (int i = 0; i < 8; ++i) {  // until the credits run out, whatever the transport buffers
      c.push("w", g);
      c.clock();
    }
  };
  std::string what;
  auto start = Clock::now();
  EXPECT_EQ(error_code_of([&] { push_then_clock(*timing_out); }, &what), Errc::kTimeout) << what;
  const double timed_out = std::chrono::duration<double>(Clock::now() - start).count();
  std::thread interrupter([&] {
    std::this_thread::sleep_for(500ms);
    interrupted->interrupt();
  });
  start = Clock::now();
  EXPECT_EQ(error_code_of([&] { push_then_clock(*interrupted); }, &what), Errc::kCancelled) << what;
  const double cancelled = std::chrono::duration<double>(Clock::now() - start).count();
  interrupter.join();
  kill(server.pid(), SIGCONT);
  std::printf(
      "[ info     ] stopped server: the 1 s timeout ended the push after %.2f s, interrupt() at 0.5 s after "
      "%.2f s\n",
      timed_out, cancelled);
  // Loose for a loaded machine: the fault costs a timeout per request, 5 s here at least.
  EXPECT_LT(timed_out, 4.5) << "more than the timeout of the wait and of the recovery after it (2 s)";
  EXPECT_LT(cancelled, 20.0) << "interrupt() did not end the wait (its timeout is 60 s)";  // loose: a loaded CI
  timing_out.reset();
  interrupted.reset();
  server.kill_now();
}

// A push that timed out against a stopped server with its sends still under
// way (tcp: the server takes each piece when it wakes) left them reading the
// client's bf16 encoding, which the next push refilled: the woken server
// applied the second push's bytes as the first's. After such a timeout the
// client takes no more calls, saying why.
TEST_P(PsFaultTest, APushThatTimedOutWithSendsUnderWayEndsTheClientsCalls) {
  if (GetParam() != transport::TransportKind::kTcp) GTEST_SKIP() << "over shm a put is done when it is posted";
  int port = 0;
  PeerProcess server = listening_peer("big_shard_server", GetParam(), 1, {}, &port);
  constexpr size_t kFloats = 16 * kWholeShard;  // 16 pieces over 3 lanes of 4 inbox slots: some wait for credit
  ClientOptions o = big_shard_client(GetParam(), port, 1s);
  o.config.wire = WireFormat::kBf16;
  auto client = connect_when_up(o, "w", kFloats);
  ASSERT_TRUE(client) << "the server process did not come up";
  ASSERT_TRUE(stop_process(server.pid()));
  std::string what;
  EXPECT_EQ(error_code_of([&] { client->push("w", std::vector<float>(kFloats, 1.0f)); }, &what), Errc::kTimeout);
  EXPECT_NE(what.find("is still under way"), std::string::npos) << what;
  std::string next;
  EXPECT_EQ(error_code_of([&] { client->push("w", std::vector<float>(kFloats, 1000.0f)); }, &next), Errc::kTimeout);
  EXPECT_NE(next.find("this client cannot go on"), std::string::npos) << next;
  kill(server.pid(), SIGCONT);
  client.reset();  // its sends end as it closes
  o.worker = 1;
  o.timeout = 10s;
  auto reader = connect_when_up(o, "w", kFloats);
  ASSERT_TRUE(reader);
  std::vector<float> w(kFloats);
  reader->pull("w", w);
  float moved = 0;
  for (float x : w) moved = std::max(moved, std::fabs(x));
  EXPECT_LE(moved, 0.05f + 1e-6f) << "the server applied the refused push's gradient (lr 0.05 x 1000) as the first's";
  reader.reset();
  server.kill_now();
}

// interrupt() during a push whose sends wait on a stopped server: the call
// ended with kCancelled and said nothing of the sends still reading the
// caller's gradient (f32: sent from the caller's memory), which the caller
// then freed or refilled; the server applied it when it woke.
TEST_P(PsFaultTest, APushInterruptedWithSendsUnderWaySaysItsMemoryIsStillRead) {
  if (GetParam() != transport::TransportKind::kTcp) GTEST_SKIP() << "over shm a put is done when it is posted";
  int port = 0;
  PeerProcess server = listening_peer("big_shard_server", GetParam(), 1, {}, &port);
  constexpr size_t kFloats = 16 * kWholeShard;  // more pieces than credits: the push waits for one
  auto client = connect_when_up(big_shard_client(GetParam(), port, 60s), "w", kFloats);
  ASSERT_TRUE(client) << "the server process did not come up";
  ASSERT_TRUE(stop_process(server.pid()));
  std::vector<float> g(kFloats, 1.0f);
  std::atomic<bool> started{false};
  auto pushing = std::async(std::launch::async, [&] {
    std::string what;
    started = true;
    const Errc code = error_code_of([&] { client->push("w", g); }, &what);
    return std::make_pair(code, what);
  });
  // 500 ms from the thread's start, not from its launch: a loaded machine ran it late.
  // (stats() would tell, but is a call of the client: a push starting then is refused.)
  for (auto until = Clock::now() + 20s; !started && Clock::now() < until;) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(500ms);
  ASSERT_EQ(pushing.wait_for(0s), std::future_status::timeout) << "the push did not wait for a credit";
  client->interrupt();
  ASSERT_EQ(pushing.wait_for(10s), std::future_status::ready) << "interrupt() did not end the push";
  const auto [code, what] = pushing.get();
  EXPECT_EQ(code, Errc::kCancelled) << what;
  EXPECT_NE(what.find("is still under way and reads this call's memory until the client is destroyed"),
            std::string::npos)
      << what;
  kill(server.pid(), SIGCONT);
  client.reset();  // before g goes: its sends end as it closes
  server.kill_now();
}

// Stops `server` (SIGSTOP), then pushes gradients of ones to `name`
// (`floats`, each push flushing the one before it) until one times out
// waiting for a credit; returns how many pushes returned before it.
int push_until_a_stopped_server_takes_no_more(Client& client, pid_t server, const std::string& name, size_t floats) {
  EXPECT_TRUE(stop_process(server));
  const std::vector<float> g(floats, 1.0f);
  int returned = 0;
  std::string what;
  const Errc code = error_code_of(
      [&] {
        for (; returned < 100000; ++returned) client.push(name, g);
      },
      &what);
  EXPECT_EQ(code, Errc::kTimeout) << what;
  return returned;
}

// A small tensor's push is gathered and sent by the next flush. When that
// flush found no credit in time (a stalled server), the push that had
// returned was dropped without a word: not sent, not counted lost. It stays
// gathered, and the next call sends it.
TEST_P(PsFaultTest, AGatheredPushSurvivesAFlushThatTimedOut) {
  int port = 0;
  PeerProcess server = listening_peer("big_shard_server", GetParam(), 1, {}, &port);
  // 3 s: the connect's steps share this bound with the one push meant to time out (1 s timed out a set-up).
  ClientOptions o = big_shard_client(GetParam(), port, 3s);
  auto client = std::make_unique<Client>(o);
  client->declare("a", 100);  // with "b", part of a shard: gathered
  client->declare("b", 100);
  client->connect();
  std::vector<float> a(100, 0.0f);
  client->init("a", a);
  client->pull("a", a);
  const int returned = push_until_a_stopped_server_takes_no_more(*client, server.pid(), "a", 100);
  kill(server.pid(), SIGCONT);
  client->pull("a", a);  // sends what is still gathered first
  EXPECT_NEAR(a[0], -0.05f * static_cast<float>(returned), 1e-4f)
      << returned << " pushes returned; the server applied " << -a[0] / 0.05f;
  EXPECT_EQ(client->stats().pushes_lost, 0u);
  client.reset();
  server.kill_now();
}

// A learning rate whose flush of the held-back push found no credit (a
// stalled server) is still the worker's; the next small push, adjoining the
// held one, joined it and went at the old rate. One message carries one rate.
TEST_P(PsFaultTest, ASmallPushAfterALearningRateWhoseFlushTimedOutGoesAtTheNewRate) {
  int port = 0;
  PeerProcess server = listening_peer("big_shard_server", GetParam(), 1, {}, &port);
  ClientOptions o = big_shard_client(GetParam(), port, 3s);
  auto client = std::make_unique<Client>(o);
  client->declare("a", 100);  // "a" then "b": adjoining parts of one shard, gathered
  client->declare("b", 100);
  client->connect();
  std::vector<float> a(100, 0.0f), b(100, 0.0f);
  client->init("a", a);
  client->init("b", b);
  client->pull("b", b);
  push_until_a_stopped_server_takes_no_more(*client, server.pid(), "a", 100);  // the last "a" stays held
  std::string what;
  EXPECT_EQ(error_code_of([&] { client->set_learning_rate(0.5f); }, &what), Errc::kTimeout) << what;
  kill(server.pid(), SIGCONT);
  client->push("b", std::vector<float>(100, 1.0f));
  client->pull("b", b);  // sends what is gathered first
  EXPECT_NEAR(b[0], -0.5f, 1e-5f) << "the push went at the server's rate (0.05), not the worker's 0.5";
  client.reset();
  server.kill_now();
}

// A pull's counters reach the metrics page once it returned: published during
// it (a long wait publishes every second), the lanes that had answered were
// counted, then taken back when a reconnect made the pull start again, and
// rdmaps_worker_pulls_total went down (a counter reset to Prometheus).
TEST_P(PsFaultTest, AScrapeDuringAPullShowsItsCountsFromBeforeIt) {
  ServerOptions so;
  so.listen = "127.0.0.1:0";
  so.index = 0;
  so.servers = 2;
  so.config = fault_config(GetParam());
  so.config.secret = test_secret();
  so.exit_when_done = false;
  so.log_connections = false;
  Server answering(so);
  std::thread serving([&] { answering.run(); });
  int port = 0;
  PeerProcess stopped = listening_peer("lane_server", GetParam(), 1, {"1", "2"}, &port);
  {
    ClientOptions o;
    o.servers = {answering.address(), "127.0.0.1:" + std::to_string(port)};
    o.config = fault_config(GetParam());
    o.config.secret = test_secret();
    o.metrics = "127.0.0.1:0";
    o.timeout = 10s;
    std::unique_ptr<Client> client = connect_when_up(o, "w", 2 * kFaultFloats);
    ASSERT_TRUE(client) << "the server process did not come up";
    std::vector<float> w(2 * kFaultFloats);
    client->pull("w", w);
    const uint64_t before = client->stats().pulls;
    ASSERT_GT(before, 0u);
    auto pulls_on_the_page = [&] {
      const std::string page = scrape(client->metrics_address());
      const std::string name = "\nrdmaps_worker_pulls_total{worker=\"0\"} ";
      const size_t at = page.find(name);
      return at == std::string::npos ? -1.0 : std::stod(page.substr(at + name.size()));
    };
    ASSERT_TRUE(stop_process(stopped.pid()));
    // Server 0's lanes answer at once; server 1's are awaited while the page is read.
    auto pulling = std::async(std::launch::async, [&] { client->pull("w", w); });
    std::this_thread::sleep_for(2500ms);
    EXPECT_EQ(pulls_on_the_page(), static_cast<double>(before)) << "a pull under way published its counts";
    kill(stopped.pid(), SIGCONT);
    ASSERT_EQ(pulling.wait_for(20s), std::future_status::ready);
    pulling.get();
    EXPECT_GT(pulls_on_the_page(), static_cast<double>(before)) << "the pull's counts, once it returned";
  }
  answering.stop();
  serving.join();
  stopped.kill_now();
}

// Leaving with one server gone: the flush of the gathered runs stopped at the
// first that failed (a stalled, then killed, server's, waiting for a credit),
// so the others' last pushes were never sent.
TEST_P(PsFaultTest, LeavingWithOneServerGoneStillSendsTheOthersTheirLastPushes) {
  int port = 0;
  PeerProcess gone = listening_peer("lane_server", GetParam(), 1, {"0", "2"}, &port);
  ServerOptions so;
  so.listen = "127.0.0.1:0";
  so.index = 1;
  so.servers = 2;
  so.config = fault_config(GetParam());
  so.config.secret = test_secret();
  so.exit_when_done = false;
  so.log_connections = false;
  Server kept(so);
  std::thread serving([&] { kept.run(); });
  {
    ClientOptions o;
    o.servers = {"127.0.0.1:" + std::to_string(port), kept.address()};
    o.config = fault_config(GetParam());
    o.config.secret = test_secret();
    o.timeout = 3s;  // as above: the set-up shares it
    Client client(o);
    client.declare("a", 50);   // server 0's [0, 100): part of its shard, gathered
    client.declare("b", 100);  // [50, 150)
    client.declare("c", 50);   // server 1's [100, 200): gathered
    client.connect();
    const std::vector<float> g(50, 1.0f);
    std::vector<float> out(50);
    client.push("a", g);
    client.pull("a", out);  // both servers up and serving
    // Until server 0's credits run out: the last run stays gathered for it.
    push_until_a_stopped_server_takes_no_more(client, gone.pid(), "a", 50);
    client.push("c", g);  // gathered for server 1
    gone.kill_now();
    std::this_thread::sleep_for(300ms);  // its connections closed
  }
  uint64_t applied = 0;
  for (auto until = Clock::now() + 10s; (applied = kept.stats().pushes) == 0 && Clock::now() < until;)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(applied, 1u) << "server 1 did not get the push gathered for it";
  kept.stop();
  serving.join();
}

// A server that does not come back within --reconnect leaves its worker
// broken: every later call fails with that error (a pull crashed on the lanes
// the attempt had closed, a clock returned as if the server were there), and
// the client goes without touching them (pushes gathered for it were sent
// through freed lanes).
TEST_P(PsFaultTest, AServerThatDoesNotComeBackLeavesEveryLaterCallFailingWithWhy) {
  int port = 0;
  PeerProcess server = listening_peer("lane_server", GetParam(), 1, {"0", "1"}, &port);
  ClientOptions o;
  o.servers = {"127.0.0.1:" + std::to_string(port)};
  o.config = fault_config(GetParam());
  o.config.secret = test_secret();
  o.config.reconnect_ms = 500;
  o.timeout = 10s;
  constexpr size_t kTensors = 3;
  std::unique_ptr<Client> client;
  for (auto until = Clock::now() + 20s; !client && Clock::now() < until;) {
    try {
      client = std::make_unique<Client>(o);
      for (size_t t = 0; t < kTensors; ++t) client->declare("t" + std::to_string(t), kFaultShard + 100);
      client->connect();
    } catch (const Error&) {
      client.reset();
      std::this_thread::sleep_for(50ms);
    }
  }
  ASSERT_TRUE(client) << "the server process did not come up";
  std::vector<float> w(kFaultShard + 100);
  client->pull("t0", w);
  server.kill_now();
  std::this_thread::sleep_for(300ms);
  std::string what;
  // Not the remedy it names without --reconnect: the next call reconnects.
  EXPECT_EQ(error_code_of([&] { client->connect(); }, &what), Errc::kPeerGone) << what;
  EXPECT_NE(what.find("the next call that needs it reconnects (--reconnect)"), std::string::npos) << what;
  // Pushes of parts of shards are gathered, one run per shard, sent at the pull.
  OutputCapture log;
  try {
    for (size_t t = 0; t < kTensors; ++t) client->push("t" + std::to_string(t), w);
    client->pull("t0", w);
    ADD_FAILURE() << "the pull after the server died returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kPeerGone) << e.what();
    EXPECT_NE(std::string(e.what()).find("did not come back within 0.5 s"), std::string::npos) << e.what();
  }
  // Once: the give-up, caught again by the piece that called it, tried anew.
  const std::string said = log.end();
  size_t attempts = 0;
  for (size_t at = 0; (at = said.find("; reconnecting to", at)) != std::string::npos; ++at) ++attempts;
  EXPECT_EQ(attempts, 1u) << said;
  const std::vector<std::pair<const char*, std::function<void()>>> later = {
      {"pull", [&] { client->pull("t0", w); }},
      {"push", [&] { client->push("t1", w); }},
      {"clock", [&] { client->clock(); }},
      {"barrier", [&] { client->barrier(); }},
  };
  for (const auto& [name, call] : later) {
    EXPECT_EQ(error_code_of(call, &what), Errc::kPeerGone) << name << ": " << what;
    EXPECT_NE(what.find(std::string(name) + ": this client cannot go on"), std::string::npos) << what;
    EXPECT_NE(what.find("did not come back"), std::string::npos) << what;
  }
  // connect() again names the give-up, not --reconnect as a remedy (it was set).
  EXPECT_EQ(error_code_of([&] { client->connect(); }, &what), Errc::kPeerGone) << what;
  EXPECT_NE(what.find("did not come back within 0.5 s"), std::string::npos) << what;
  EXPECT_EQ(what.find("--reconnect SEC does"), std::string::npos) << what;
  const auto start = Clock::now();
  client.reset();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 5.0) << "leaving a dead server waited";
}

// A server restarted with another configuration, secret or transport
// version refuses the reconnecting worker at every attempt: the worker
// retried for the whole of --reconnect (a minute here) before it said so.
TEST_P(PsFaultTest, AReconnectStopsAtARefusalThatNoRetryCanPass) {
  const std::map<std::string, std::string> said = {
      {"workers", "it was started for 2 workers, this server for 3"},
      {"secret", "wrong shared secret"},
      {"transport-version", "speaks transport version " + std::to_string(bootstrap::kVersion + 1) + ", this side " +
                                std::to_string(bootstrap::kVersion)},
  };
  for (const auto& [change, why] : said) {
    SCOPED_TRACE(change);
    int port = 0;
    PeerProcess server = listening_peer("standalone_server", GetParam(), 1, {}, &port);
    ClientOptions o;
    o.servers = {"127.0.0.1:" + std::to_string(port)};
    o.workers = 2;
    o.config = fault_config(GetParam());
    o.config.staleness = 0;
    o.config.secret = test_secret();
    o.config.reconnect_ms = 10000;
    o.timeout = 10s;
    auto client = connect_when_up(o, "w", kFaultFloats);
    ASSERT_TRUE(client) << "the server process did not come up";
    std::vector<float> w(kFaultFloats, 1.0f);
    client->init("w", w);
    server.kill_now();
    PeerProcess changed("standalone_server", GetParam(), port, 2, {change});
    const auto start = Clock::now();
    std::string what;
    EXPECT_EQ(error_code_of([&] { client->pull("w", w); }, &what), Errc::kPeerGone) << what;
    EXPECT_NE(what.find("refuses this worker in a way no retry can pass"), std::string::npos) << what;
    EXPECT_NE(what.find(why), std::string::npos) << what;
    EXPECT_LT(Clock::now() - start, 30s) << "the worker retried a refusal for good";
    client.reset();
  }
}

// A worker reconnecting to a dead server (--reconnect 20 s) ends at once on
// interrupt(): it slept between attempts to the end of its 20 s.
TEST_P(PsFaultTest, InterruptEndsAReconnect) {
  int port = 0;
  PeerProcess server = listening_peer("big_shard_server", GetParam(), 1, {}, &port);
  ClientOptions o = big_shard_client(GetParam(), port, 2s);
  o.config.reconnect_ms = 20000;
  auto client = connect_when_up(o, "w", 100);
  ASSERT_TRUE(client) << "the server process did not come up";
  std::vector<float> w(100, 0.5f);
  client->pull("w", w);
  server.kill_now();
  std::this_thread::sleep_for(300ms);
  auto pulling = std::async(std::launch::async, [&] { client->pull("w", w); });
  std::this_thread::sleep_for(500ms);
  const auto start = Clock::now();
  client->interrupt();
  ASSERT_EQ(pulling.wait_for(10s), std::future_status::ready) << "interrupt() did not end the reconnect";
  const double interrupted = std::chrono::duration<double>(Clock::now() - start).count();
  std::string what;
  EXPECT_EQ(error_code_of([&] { pulling.get(); }, &what), Errc::kCancelled) << what;
  // Loose (a loaded CI): the reconnect it ends would go on 20 s.
  EXPECT_LT(interrupted, 8.0) << "the reconnect went on " << interrupted << " s after interrupt()";
}

// A client's timeout bounds every wait: none at all is refused, naming it,
// and the longest one (a wait without a bound) is no instant timeout.
TEST_P(PsFaultTest, AClientTimeoutOfNothingIsRefusedAndTheLongestOneWaits) {
  Config c = fault_config(GetParam());
  ServerGroup servers(1, 1, c);
  ClientOptions o = local_worker_options(servers.addresses(), c);
  for (auto bad : {0ms, -5ms}) {
    o.timeout = bad;
    std::string what;
    EXPECT_EQ(error_code_of([&] { Client client(o); }, &what), Errc::kInvalidArgument) << what;
    EXPECT_NE(what.find("ClientOptions::timeout is " + std::to_string(bad.count()) + " ms"), std::string::npos) << what;
  }
  o.timeout = std::chrono::milliseconds::max();
  Client client(o);
  client.declare("w", kFaultFloats);
  client.connect();  // failed at once: "no handshake within 9223372036854775807 ms"
  std::vector<float> w(kFaultFloats, 1.0f);
  client.init("w", w);
  client.pull("w", w);
  EXPECT_EQ(w[0], 1.0f);
}

// Servers that log a stall after 1 s and serve on once their workers left.
// (300 ms: a loaded machine took that long between a test's steps, and a
// worker in step was logged as stalled.)
ServerOptions watching_stalls() {
  ServerOptions o;
  o.stall_warning = 1s;
  o.exit_when_done = false;
  return o;
}

// Waited for, not timed: a loaded machine (CI's, with the sanitizer build
// beside three tests) checked a 300 ms stall after more than 1 s.
bool stall_warnings_reach(ServerGroup& servers, uint64_t n) {
  for (auto until = Clock::now() + 20s; Clock::now() < until; std::this_thread::sleep_for(10ms))
    if (servers.server(0).stats().stall_warnings >= n) return true;
  return false;
}

// A worker that stops clocking while it holds the slowest clock is logged once
// per stall (here after 1 s), and again after it advanced and stalled anew.
TEST_P(PsFaultTest, AWorkerThatStopsClockingIsLoggedOncePerStall) {
  Config c = config();
  ServerGroup servers(1, 1, c, watching_stalls());
  {  // the worker leaves before the server stops
    Client client(local_worker_options(servers.addresses(), c));
    client.declare("w", 1000);
    client.connect();
    std::vector<float> w(1000, 1.0f);
    client.init("w", w);
    for (int i = 0; i < 3; ++i) {  // steady: no warning
      client.push("w", w);
      client.clock();
    }
    EXPECT_EQ(servers.server(0).stats().stall_warnings, 0u);
    EXPECT_TRUE(stall_warnings_reach(servers, 1)) << "a stall past 1 s was not logged";
    std::this_thread::sleep_for(1500ms);  // the stall goes on: one warning, not one per check
    EXPECT_EQ(servers.server(0).stats().stall_warnings, 1u);
    client.clock();
    EXPECT_TRUE(stall_warnings_reach(servers, 2)) << "a second stall was not logged";
    std::this_thread::sleep_for(1500ms);
    EXPECT_EQ(servers.server(0).stats().stall_warnings, 2u);
  }
  servers.stop();
}

// A worker that waited at a clock ahead until the stalled one came up to it
// holds the job only from then: it was logged at once when the stall ended,
// blamed for the very stall it had waited out.
TEST_P(PsFaultTest, AWorkerThatWaitedOutAStallIsNotLoggedForIt) {
  Config c = config();
  c.staleness = 0;
  ServerGroup servers(1, 2, c, watching_stalls());
  {
    // The first clocks before the second joins (no stall counts before):
    // joined first, a slow step of the test's made the first stalled too.
    auto first = connect_worker(servers.addresses(), c, 0, 2);
    const std::vector<float> g(1000, 0.01f);
    first->push("w", g);
    std::thread waits([&] { first->clock(); });  // BSP: until the second clocks too
    auto second = connect_worker(servers.addresses(), c, 1, 2);
    EXPECT_TRUE(stall_warnings_reach(servers, 1)) << "the second worker's stall was not logged";
    second->push("w", g);
    second->clock();
    waits.join();
    // The first has been at the slowest clock since the second clocked only.
    std::this_thread::sleep_for(150ms);
    EXPECT_EQ(servers.server(0).stats().stall_warnings, 1u) << "the worker that waited was logged as stalled";
  }
  servers.stop();
}

// The stall line said "workers ahead of it by the staleness bound wait for
// it" under --async, and for a worker alone: it says who waits, as it is.
// rdmaps-train's end barrier, right after its last clock, left the step-time
// gauge at a microsecond for the rest of the run: a barrier is no step.
TEST_P(PsFaultTest, ABarrierLeavesTheStepTimeAsTheLastStepSetIt) {
  Config c = config();
  c.staleness = kInfiniteStaleness;
  ServerGroup servers(1, 1, c);
  auto client = connect_worker(servers.addresses(), c, 0, 1);
  client->clock();
  std::this_thread::sleep_for(100ms);
  client->clock();
  const double step = client->stats().last_step_seconds;
  EXPECT_GE(step, 0.09);
  client->barrier();
  EXPECT_EQ(client->stats().last_step_seconds, step);
  client.reset();
  servers.join();
}

TEST_P(PsFaultTest, AStallLineSaysWhoWaitsForTheStalledWorker) {
  const std::vector<float> g(1000, 0.01f);
  for (const uint64_t bound : {uint64_t{0}, kInfiniteStaleness}) {
    Config c = config();
    c.staleness = bound;
    ServerGroup servers(1, 2, c, watching_stalls());
    LogWatch log;
    {
      auto first = connect_worker(servers.addresses(), c, 0, 2);
      first->push("w", g);
      std::thread ahead([&] { first->clock(); });                  // BSP: it waits for the second; async: it goes on
      auto second = connect_worker(servers.addresses(), c, 1, 2);  // joined after the first clocked (above)
      EXPECT_TRUE(stall_warnings_reach(servers, 1)) << "the second worker's stall was not logged";
      const std::string said = bound == 0 ? "(1 worker(s) ahead of it by the staleness bound wait for it)"
                                          : "(no worker waits for it: the staleness bound is inf; is it hung?)";
      EXPECT_TRUE(log.wait_for(said, 5s)) << log.text();
      second->push("w", g);
      second->clock();
      ahead.join();
    }
    servers.stop();
  }
}

// While a worker has yet to connect it holds the clock, not the connected
// ones: they are not logged as stalled (1024 virtual workers drew 206 such
// warnings while the rest connected); once all came, a real stall is.
TEST_P(PsFaultTest, WorkersWaitingForOneNotYetConnectedAreNotLoggedAsStalled) {
  Config c = config();
  ServerGroup servers(1, 2, c, watching_stalls());
  {
    auto first = connect_worker(servers.addresses(), c, 0, 2);
    std::this_thread::sleep_for(2s);  // worker 1 not there yet: twice the stall warning's time
    EXPECT_EQ(servers.server(0).stats().stall_warnings, 0u);
    auto second = connect_worker(servers.addresses(), c, 1, 2);
    // Both connected, neither clocks: a stall.
    EXPECT_TRUE(stall_warnings_reach(servers, 1)) << "a stall of both connected workers was not logged";
  }
  servers.stop();
}

// Minor page faults the thread of this process named `name` took so far
// (/proc/self/task/*/stat, field 10); nullopt where no thread has that name.
std::optional<uint64_t> thread_minor_faults(const std::string& name) {
  for (const auto& t : process_threads())
    if (t.name == name && t.fields.size() > 7) return std::stoull(t.fields[7]);
  return std::nullopt;
}

// A worker joining or rejoining a server that keeps a copy of its range per
// worker (DC-ASGD's backup, here 64 MB) holds up no other worker: the
// control thread makes and faults in the copy, and the lane only registers
// it. Before, the lane faulted the copy in itself and served nobody
// meanwhile, each time anyone joined: on a 2-core VM 0.54 s and 33,795 page
// faults over shm, 0.26-0.35 s over tcp (UCX gave it huge pages). Checked by
// what the lane did (its page faults: a count, not a time) and by its
// longest set-up pause, against a bound the old lane exceeded 3.5-7 times
// and this one stays under about 4 times (19-20 ms: the inbox, the endpoint).
TEST_P(PsFaultTest, AWorkerJoiningAServerWithALargeRangeHoldsUpNoLane) {
  constexpr size_t kBigFloats = size_t{16}
                                << 20;   // a copy of 64 MB per worker (128: ~0.8 GB in all beside CI's builds)
  constexpr size_t kSmallFloats = 1000;  // what worker 0 trains on meanwhile
  const uint64_t copy_pages = kBigFloats * sizeof(float) / static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  Config c = config();
  c.rule = UpdateRule::kDcAsgdAdaptive;
  c.staleness = kInfiniteStaleness;  // worker 0 goes on while worker 1 comes and goes
  c.server_threads = 1;              // one lane holds the whole range, whatever the machine
  ServerOptions serve_on;
  serve_on.exit_when_done = false;  // worker 1 leaves and comes back
  ServerGroup servers(1, 2, c, serve_on);
  auto worker = [&](uint32_t id) {
    auto client = std::make_unique<Client>(local_worker_options(servers.addresses(), c, id));
    client->declare("big", kBigFloats);
    client->declare("small", kSmallFloats);
    return client;
  };
  auto steady = worker(0);
  steady->connect();
  std::atomic<bool> done{false};
  std::atomic<uint64_t> steps{0}, longest_step_us{0};
  std::thread trainer([&] {
    std::vector<float> g(kSmallFloats, 1e-3f), p(kSmallFloats);
    while (!done.load()) {
      const auto t0 = Clock::now();
      steady->push("small", g);
      steady->pull("small", p);
      const auto us =
          static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
      longest_step_us = std::max<uint64_t>(longest_step_us.load(), us);
      ++steps;
    }
  });
  struct StopTraining {  // also when an assertion returns early
    std::atomic<bool>& done;
    std::thread& trainer;
    ~StopTraining() {
      done = true;
      if (trainer.joinable()) trainer.join();
    }
  } stop_training{done, trainer};
  for (auto until = Clock::now() + 30s; steps.load() < 20 && Clock::now() < until;) std::this_thread::sleep_for(1ms);
  ASSERT_GE(steps.load(), 20u) << "worker 0 does not train";
  longest_step_us = 0;  // from here on, while worker 1 joins
  std::vector<float> g(kSmallFloats, 1e-3f), p(kSmallFloats);
  for (const char* what : {"joining", "rejoining"}) {
    const auto before = thread_minor_faults("rdmaps-lane0");
    ASSERT_TRUE(before) << "no thread named rdmaps-lane0";
    auto joiner = worker(1);
    joiner->connect();  // returns once the lane admitted it
    const uint64_t lane_faults = *thread_minor_faults("rdmaps-lane0") - *before;
    EXPECT_LT(lane_faults, copy_pages / 4) << "the lane faulted in " << lane_faults << " pages while worker 1 was "
                                           << what << " (its copy has " << copy_pages << ")";
    std::printf("the lane took %llu page faults while worker 1 was %s\n", static_cast<unsigned long long>(lane_faults),
                what);
    const uint64_t steps_before = steps.load();
    joiner->push("small", g);
    joiner->pull("small", p);
    for (auto until = Clock::now() + 30s; steps.load() < steps_before + 5 && Clock::now() < until;)
      std::this_thread::sleep_for(1ms);
    EXPECT_GE(steps.load(), steps_before + 5) << "worker 0 stopped training after worker 1 was " << what;
  }  // worker 1 leaves each time
  done = true;
  trainer.join();
  steady.reset();  // leaves
  const ServerStats s = servers.server(0).stats();
  EXPECT_EQ(s.applied_per_worker[1], 2u);
  std::printf("lane's longest set-up pause %.1f ms, worker 0's longest step while worker 1 joined %.1f ms\n",
              s.longest_setup_pause_us / 1e3, longest_step_us.load() / 1e3);
  // Printed, not asserted: 12-24 ms alone, 260-557 ms before joins left the lanes, but 234 ms once in CI's
  // first window (three test processes beside the sanitizer build). The lane's page faults above are the
  // check: a join on the lane touches the joiner's whole copy there.
  servers.stop();
}

TEST_P(PsFaultTest, ServerAdoptsTheFirstWorkersRuleAndRefusesADifferentOne) {
  Config c = config();  // SGD lr 0.01 here; the workers say otherwise
  c.staleness = kInfiniteStaleness;
  ServerOptions o;
  o.rule_from_workers = true;
  o.exit_when_done = false;
  ServerGroup servers(1, 2, c, o);
  // Each worker pushes ones at its own rate 0.125, then -0.5 at the adopted 0.5.
  PeerProcess first("rule_worker", GetParam(), 0, 1, {servers.addresses(), "0", "0.5", "0.125"});
  ASSERT_EQ(first.wait(60s), 0) << "the first worker's rule (lr 0.5) was not applied";
  PeerProcess differs("rule_worker", GetParam(), 0, 2, {servers.addresses(), "1", "0.25", "refused"});
  EXPECT_EQ(differs.wait(60s), 0) << "a worker with another learning rate was admitted";
  PeerProcess same("rule_worker", GetParam(), 0, 3, {servers.addresses(), "1", "0.5", "0.25"});
  EXPECT_EQ(same.wait(60s), 0) << "a worker with the adopted rule was not admitted or its push not applied";
  EXPECT_EQ(servers.server(0).stats().pushes, 4u);
}

// extra: servers, worker id, learning rate, then the value every parameter must
// have after this worker's two pushes, or "refused".
RDMAPS_TEST_PEER(rule_worker) {
  Config c;
  c.staleness = kInfiniteStaleness;
  c.learning_rate = std::stof(args.extra.at(2));
  Client client(worker_options(args, c));
  client.declare("w", 300);
  const std::string expect = args.extra.at(3);
  try {
    client.connect();
  } catch (const Error& e) {
    const std::string what = e.what();
    bool named = what.find("update rule differs") != std::string::npos && what.find("lr") != std::string::npos;
    if (expect == "refused" && e.code() == Errc::kProtocol && named) return 0;
    std::fprintf(stderr, "rule_worker: connect failed: %s\n", what.c_str());
    return 1;
  }
  if (expect == "refused") return 2;
  std::vector<float> w(300), ones(300, 1.0f);
  // A worker-side rate wins over the adopted one for the pushes that carry it.
  client.set_learning_rate(0.125f);
  client.push("w", ones);
  client.set_learning_rate(std::nullopt);
  client.push("w", std::vector<float>(300, -0.5f));  // at the adopted lr 0.5: +0.25
  // Async pulls return the cache; wait until the write-back carries the push.
  const float want = std::stof(expect);
  for (int i = 0; i < 2000; ++i) {
    client.pull("w", w);
    if (w[0] == want) break;
    std::this_thread::sleep_for(5ms);
  }
  for (float v : w)
    if (v != want) {
      std::fprintf(stderr, "rule_worker: parameter %g, expected %g\n", v, want);
      return 3;
    }
  return 0;
}

// One job per server, run by one thread: a second run() is refused while the
// first runs and after it returned, and a Server destroyed while run() runs on
// another thread stops it and waits (it crashed in the listener's poll).
size_t open_files() {
  size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) n += entry.is_symlink() ? 1 : 0;
  return n;
}

// A connect() whose transport cannot be made (here: no network device UCX
// may use) fails with an rdmaps::Error and leaves the client as it was, so a
// later connect() works. It used to leave the client half-connected: the
// second connect() returned at once and the next push dereferenced no
// transport. (Running out of open files fails the same way, or, when UCX's
// own async thread cannot start, aborts inside UCX 1.13: not a way to test.)
// A Config built in code is held to the command line's ranges: an eps of 0
// or a negative ms-momentum made the model NaN at the first push.
TEST(ConfigInCode, ARuleParameterOutOfRangeIsRefusedByServerAndClientNamingIt) {
  Config c;
  c.transport = "tcp";
  c.secret = test_secret();
  c.eps = 0;
  ServerOptions so;
  so.listen = "127.0.0.1:0";
  so.config = c;
  std::string what;
  EXPECT_EQ(error_code_of([&] { Server server(so); }, &what), Errc::kInvalidArgument) << what;
  EXPECT_NE(what.find("ServerOptions::config: eps 0 is not a positive number (--eps)"), std::string::npos) << what;
  c.eps = 1e-7f;
  c.ms_momentum = -0.5f;
  ClientOptions co;
  co.servers = {"127.0.0.1:9"};
  co.config = c;
  EXPECT_EQ(error_code_of([&] { Client client(co); }, &what), Errc::kInvalidArgument) << what;
  EXPECT_NE(what.find("ClientOptions::config: ms-momentum -0.5 is not in [0, 1) (--ms-momentum)"), std::string::npos)
      << what;
  co.config.ms_momentum = 0.95f;
  co.worker = kMaxWorkers;  // a server refused it only at connect(), as a protocol error
  EXPECT_EQ(error_code_of([&] { Client client(co); }, &what), Errc::kInvalidArgument) << what;
  EXPECT_NE(what.find("ClientOptions::worker 4096 is not below 4096"), std::string::npos) << what;
  co.worker = 0;
  co.servers.assign(kMaxServers + 1, "127.0.0.1:9");  // more servers than a job may have (kMaxServers)
  EXPECT_EQ(error_code_of([&] { Client client(co); }, &what), Errc::kInvalidArgument) << what;
  EXPECT_NE(what.find("ClientOptions::servers lists 4097 servers, more than the 4096 a job may have"),
            std::string::npos)
      << what;
  // Each entry as every other list of servers is read (src/launch/server_list.h): a second
  // spelling of one port named one server twice, a comma two servers in one entry.
  for (const auto& [servers, said] :
       {std::pair{std::vector<std::string>{"127.0.0.1:9", "127.0.0.1:09"},
                  "ClientOptions::servers entry 2 '127.0.0.1:09' has port 09 with a leading zero"},
        {std::vector<std::string>{"127.0.0.1:0"}, "ClientOptions::servers entry 1 '127.0.0.1:0' has port 0"},
        {std::vector<std::string>{"127.0.0.1:9,127.0.0.1:10"}, "entry 1 '127.0.0.1:9,127.0.0.1:10' holds a comma"},
        {std::vector<std::string>{"127.0.0.1:9", ""}, "ClientOptions::servers entry 2 is empty"},
        {std::vector<std::string>{"127.0.0.1:9", "127.0.0.1:9"}, "'127.0.0.1:9' is listed twice (entries 1 and 2)"}}) {
    co.servers = servers;
    EXPECT_EQ(error_code_of([&] { Client client(co); }, &what), Errc::kInvalidArgument) << what;
    EXPECT_NE(what.find(said), std::string::npos) << what;
  }
}

TEST(ClientConnect, AConnectWhoseTransportCannotBeMadeFailsAndMayBeRetried) {
  int port = 0;
  PeerProcess server = listening_peer("standalone_server", transport::TransportKind::kTcp, 1, {}, &port);
  ClientOptions o;
  o.servers = {"127.0.0.1:" + std::to_string(port)};
  o.config = fault_config(transport::TransportKind::kTcp);
  o.config.staleness = 0;
  o.config.secret = test_secret();
  o.timeout = 30s;
  Client client(o);
  client.declare("w", kFaultFloats);
  const char* devices = std::getenv("UCX_NET_DEVICES");
  const std::string saved = devices ? devices : "";
  setenv("UCX_NET_DEVICES", "no-such-device", 1);
  std::string what;
  const Errc code = error_code_of([&] { client.connect(); }, &what);
  if (devices)
    setenv("UCX_NET_DEVICES", saved.c_str(), 1);
  else
    unsetenv("UCX_NET_DEVICES");
  // A setting to fix, named (it was "unreachable", blaming a peer).
  EXPECT_EQ(code, Errc::kInvalidArgument) << what;
  EXPECT_NE(what.find("UCX_NET_DEVICES=no-such-device"), std::string::npos) << what;
  std::printf("[ info     ] connect() without a usable device: %s\n", what.c_str());
  bool connected = false;
  for (auto until = Clock::now() + 20s; !connected && Clock::now() < until;) {
    try {
      client.connect();  // the same client, once the server process listens
      connected = true;
    } catch (const Error&) {
      std::this_thread::sleep_for(50ms);
    }
  }
  ASSERT_TRUE(connected) << "the retried connect() never succeeded";
  std::vector<float> w(kFaultFloats, 1.0f);
  client.init("w", w);
  client.push("w", w);
  client.pull("w", w);
  EXPECT_FLOAT_EQ(w[0], 0.95f);  // one SGD step of lr 0.05
}

// A worker started before its server (a job script starting both at once):
// connect() waits for the server to listen, within its timeout; it failed at
// the first refused connection ("nobody listens there").
TEST_P(PsFaultTest, AWorkerStartedBeforeItsServerWaitsForItToListen) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    const int port = free_listen_port();
    ClientOptions o;
    o.servers = {"127.0.0.1:" + std::to_string(port)};
    o.config = fault_config(GetParam());
    o.config.staleness = 0;
    o.config.secret = test_secret();
    o.timeout = 30s;
    Client client(o);
    client.declare("w", kFaultFloats);
    auto connected = std::async(std::launch::async, [&] { client.connect(); });
    std::this_thread::sleep_for(1500ms);  // refused all this while
    ASSERT_EQ(connected.wait_for(0s), std::future_status::timeout) << "connect() ended before any server listened";
    PeerProcess server("standalone_server", GetParam(), port, 1);
    while (connected.wait_for(50ms) == std::future_status::timeout && server.running()) {
    }
    if (connected.wait_for(0s) == std::future_status::timeout) {  // the server exited: another process took the port
      client.interrupt();
      EXPECT_EQ(error_code_of([&] { connected.get(); }), Errc::kCancelled);
      continue;
    }
    connected.get();
    std::vector<float> w(kFaultFloats, 1.0f);
    client.init("w", w);
    client.push("w", w);
    client.pull("w", w);
    EXPECT_FLOAT_EQ(w[0], 0.95f);  // one SGD step of lr 0.05
    return;
  }
  FAIL() << "the server process could not listen on a free port in 3 tries";
}

// Where nobody ever listens, connect() fails at its timeout naming the
// server's place in the list and its address (a launched worker, given the
// list by its launcher, was told the address alone).
TEST(ClientConnect, NobodyListeningFailsAtTheTimeoutNamingTheServerAndItsAddress) {
  const std::string address = "127.0.0.1:" + std::to_string(free_listen_port());
  ClientOptions o;
  o.servers = {address, "127.0.0.1:" + std::to_string(free_listen_port())};
  o.config = fault_config(transport::TransportKind::kTcp);
  o.timeout = 1500ms;
  Client client(o);
  client.declare("w", kFaultFloats);
  const auto start = Clock::now();
  std::string what;
  EXPECT_EQ(error_code_of([&] { client.connect(); }, &what), Errc::kUnreachable) << what;
  EXPECT_GE(Clock::now() - start, 1500ms);
  EXPECT_LT(Clock::now() - start, 10s);
  EXPECT_NE(what.find("server 0 of 2: connecting to " + address + ": nobody listened there within"), std::string::npos)
      << what;
}

// A server object that outlives its run() (C, Python) listened on: a worker
// connecting after the job ended was taken in and never answered, and waited
// out its timeout for "no handshake". The port is closed now (free for the
// next job's server), and the worker is told nobody listens there.
TEST(ClientConnect, AServerWhoseRunEndedListensNoMore) {
  const Config c = fault_config(transport::TransportKind::kTcp);
  ServerGroup servers(1, 1, c);
  {
    Client client(local_worker_options(servers.addresses(), c));
    client.declare("w", kFaultFloats);
    client.connect();
  }
  servers.join();  // every worker left: the job is over
  ClientOptions late = local_worker_options(servers.addresses(), c);
  late.timeout = 1500ms;
  Client client(late);
  client.declare("w", kFaultFloats);
  std::string what;
  EXPECT_EQ(error_code_of([&] { client.connect(); }, &what), Errc::kUnreachable) << what;
  EXPECT_NE(what.find("nobody listened there"), std::string::npos) << what;
}

// A table whose Hello is larger than a server reads is refused by connect(),
// naming its tensors and the limit, before anything is connected (the control
// channel used to refuse it saying only "control message ... exceeds the
// 16777216-byte limit"). Nobody needs to listen: nothing is sent.
TEST(ClientConnect, ATableTooLargeToAnnounceIsRefusedNamingItsTensors) {
  ClientOptions o;
  o.servers = {"127.0.0.1:" + std::to_string(free_listen_port())};
  o.config = fault_config(transport::TransportKind::kTcp);
  Client client(o);
  const std::string prefix(240, 'p');
  for (int i = 0; i < 70000; ++i) client.declare(prefix + std::to_string(i), 1);
  std::string what;
  EXPECT_EQ(error_code_of([&] { client.connect(); }, &what), Errc::kInvalidArgument) << what;
  EXPECT_NE(what.find("the 70000 declared tensors"), std::string::npos) << what;
  EXPECT_NE(what.find("over the 16777216 a server reads"), std::string::npos) << what;
}

// More tensors than a server accepts, with names short enough for the
// Hello's bytes, are refused by connect() naming the count and the limit
// (the server refused the Hello, and the worker heard less).
TEST(ClientConnect, MoreTensorsThanAServerAcceptsAreRefusedNamingTheLimit) {
  ClientOptions o;
  o.servers = {"127.0.0.1:" + std::to_string(free_listen_port())};
  o.config = fault_config(transport::TransportKind::kTcp);
  Client client(o);
  constexpr int kTensors = (1 << 20) + 1;
  for (int i = 0; i < kTensors; ++i) client.declare(std::to_string(i), 1);
  std::string what;
  EXPECT_EQ(error_code_of([&] { client.connect(); }, &what), Errc::kInvalidArgument) << what;
  EXPECT_NE(what.find("connect(): 1048577 tensors declared, over the 1048576 a server accepts"), std::string::npos)
      << what;
}

// A server whose soft limit on open files is extra.at(0) above what it has
// open once it listens.
RDMAPS_TEST_PEER(tight_files_server) {
  ServerOptions o;
  o.listen = "127.0.0.1:" + std::to_string(args.port);
  o.workers = 2;
  o.config = fault_config(args.transport);
  o.config.staleness = kInfiniteStaleness;
  o.config.secret = test_secret();
  o.exit_when_done = false;
  Server server(o);
  rlimit r{};
  getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = open_files() + std::stoul(args.extra.at(0));
  if (setrlimit(RLIMIT_NOFILE, &r) != 0) return 2;
  server.run();
  return 0;
}

// A server near its limit on open files refuses the worker it has no room
// for, naming the limit, and serves on: UCX 1.13 crashed it (SIGSEGV
// unpacking a shared-memory key, 64 workers under ulimit -n 200). Given room
// again (prlimit from outside), it admits the next worker.
TEST_P(PsFaultTest, AServerOutOfFilesRefusesTheWorkerItHasNoRoomForAndServesOn) {
  int port = 0;
  PeerProcess server = listening_peer("tight_files_server", GetParam(), 1, {"24"}, &port);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  Config c = fault_config(GetParam());
  c.staleness = kInfiniteStaleness;
  c.secret = test_secret();
  std::string what;
  // For now: given room, a later connect passes (below).
  EXPECT_EQ(error_code_of([&] { connect_worker(address, c, 0, 2); }, &what), Errc::kRefusedForNow);
  EXPECT_NE(what.find("refused: no open files left for it"), std::string::npos) << what;
  EXPECT_NE(what.find("allowed open files open: raise the limit"), std::string::npos) << what;
  ASSERT_TRUE(server.running()) << "the server died";
  rlimit roomy{};
  ASSERT_EQ(prlimit(server.pid(), RLIMIT_NOFILE, nullptr, &roomy), 0);
  roomy.rlim_cur = roomy.rlim_max;
  ASSERT_EQ(prlimit(server.pid(), RLIMIT_NOFILE, &roomy, nullptr), 0);
  auto worker = connect_worker(address, c, 0, 2);
  const std::vector<float> g(1000, 1.0f);
  worker->push("w", g);
  worker->clock();
  worker.reset();
  server.kill_now();
}

// A process at its limit on open files says so when UCX fails with a bare
// I/O error (tested without UCX: it may abort when it runs out itself).
TEST(ClientConnect, AnErrorAtTheOpenFilesLimitSaysSo) {
  std::string hint;
  {
    ScopedSoftFileLimit tight(open_files() + 4);
    ASSERT_TRUE(tight.lowered());
    hint = transport::open_files_hint();
  }
  EXPECT_NE(hint.find("allowed open files open: raise the limit"), std::string::npos) << hint;
  EXPECT_EQ(transport::open_files_hint(), "") << "far from the limit there is nothing to say";
}

// A server holds a few files per worker and lane: it takes the hard limit
// instead of failing at the soft one (often 1024: about 20 workers at 16 lanes).
TEST(ServerFiles, AServerTakesTheHardLimitOnOpenFiles) {
  ScopedSoftFileLimit low(512);
  if (!low.lowered()) GTEST_SKIP() << "the hard limit is not above 512";
  uint64_t during = 0;
  {
    ServerGroup servers(1, 1, sgd_config(transport::TransportKind::kTcp, 0.5f, 64));
    during = ScopedSoftFileLimit::soft_now();
  }
  EXPECT_EQ(during, low.saved().rlim_max);
}

// So does a worker: it holds a few per server lane, and a job of many
// servers of many threads passes the soft limit.
TEST(ServerFiles, AWorkerTakesTheHardLimitOnOpenFiles) {
  int port = 0;  // the server: its own process, its own limit
  PeerProcess server = listening_peer("standalone_server", transport::TransportKind::kTcp, 1, {}, &port);
  ScopedSoftFileLimit low(512);
  if (!low.lowered()) GTEST_SKIP() << "the hard limit is not above 512";
  ClientOptions o;
  o.servers = {"127.0.0.1:" + std::to_string(port)};
  o.config = fault_config(transport::TransportKind::kTcp);
  o.config.staleness = 0;
  o.config.secret = test_secret();
  const auto client = connect_when_up(o, "w", kFaultFloats);
  ASSERT_TRUE(client) << "the server process did not come up";
  EXPECT_EQ(ScopedSoftFileLimit::soft_now(), low.saved().rlim_max);
}

TEST(ServerRun, ASecondRunIsRefusedAndDestroyingARunningServerStopsIt) {
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.config = fault_config(transport::TransportKind::kShm);
  o.config.secret = test_secret();
  o.exit_when_done = false;
  auto server = std::make_unique<Server>(o);
  Server* raw = server.get();
  std::atomic<bool> returned{false};
  std::thread runner([raw, &returned] {
    try {
      raw->run();
      returned = true;
    } catch (const Error& e) {  // this thread lost the race for run(): said, not std::terminate
      ADD_FAILURE() << "the runner's run() failed: " << e.what();
    }
  });
  // Running once it answers a handshake (a fixed 200 ms could pass before the runner took the run, loaded).
  auto context = transport::create_context({.transport = transport::TransportKind::kShm, .secret = test_secret()});
  auto answered = context->connect(transport::SockAddr::parse(raw->address()), 20s);
  try {
    raw->run();
    ADD_FAILURE() << "a second run() at once was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already running"), std::string::npos) << e.what();
  }
  server.reset();  // while the runner is inside run(): stops it, waits for it, and does not crash
  runner.join();
  EXPECT_TRUE(returned.load());

  Server once(o);
  once.stop();
  once.run();  // stopped before it ran: returns at once
  try {
    once.run();
    ADD_FAILURE() << "run() after the job was over was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("job is over"), std::string::npos) << e.what();
  }
}

// Seconds until the kernel's next keepalive probe on each established tcp
// socket of this process that has one armed (timer 2).
std::vector<double> keepalive_timers() {
  std::vector<double> timers;
  for (const OwnTcpSocket& s : own_established_tcp_sockets())
    if (s.timer.starts_with("02:"))
      timers.push_back(static_cast<double>(std::stoul(s.timer.substr(3), nullptr, 16)) / ::sysconf(_SC_CLK_TCK));
  return timers;
}

// A job of one server and one worker over `kind` with `peer_timeout_ms`,
// a push and a pull done: `check` runs while it is up.
template <class Check>
void with_a_job(transport::TransportKind kind, uint64_t peer_timeout_ms, Check check) {
  Config c = fault_config(kind);
  c.peer_timeout_ms = peer_timeout_ms;
  ServerGroup servers(1, 1, c);
  Client client(local_worker_options(servers.addresses(), c));
  std::vector<float> w(kFaultFloats, 1.0f);
  client.declare("w", w.size());
  client.connect();
  client.push("w", w);
  client.pull("w", w);
  check();
}

// UCX's own TCP keepalive ends a connection after about 20 s of silence (idle
// 10 s): a 40 s partition ended a job whose waits allowed 90 s, and
// --reconnect could not save it. The job's --peer-timeout (default 120 s:
// first probe after 60 s) reaches the kernel; 0 leaves UCX's.
TEST(TcpKeepalive, ASilentConnectionLivesAsLongAsThePeerTimeoutSays) {
  for (const uint64_t peer_timeout_ms : {uint64_t{120000}, uint64_t{0}})
    with_a_job(transport::TransportKind::kTcp, peer_timeout_ms, [&] {
      // A socket shows one timer: while a segment awaits its acknowledgment, the retransmission's.
      std::vector<double> timers = keepalive_timers();
      for (auto until = Clock::now() + 5s; timers.empty() && Clock::now() < until; timers = keepalive_timers())
        std::this_thread::sleep_for(20ms);
      ASSERT_FALSE(timers.empty()) << "UCX armed no keepalive on its connections";
      const double longest = *std::max_element(timers.begin(), timers.end());
      // Every connection's, UCX's too: the bootstrap sockets' alone (60 s
      // whatever UCX does) passed the longest with UCX's left at 10 s.
      const double shortest = *std::min_element(timers.begin(), timers.end());
      if (peer_timeout_ms)
        EXPECT_GT(shortest, 40.0) << "a first keepalive probe comes " << shortest << " s from now; --peer-timeout "
                                  << "120 puts every one 60 s after the last traffic (UCX's own: 10 s)";
      else
        EXPECT_LE(longest, 10.5) << "--peer-timeout 0 should leave UCX's keepalive (first probe after 10 s)";
    });
}

// Every transport learns of a dead peer from its bootstrap socket closing;
// one whose host vanished sends no FIN, so without keepalive a lane waiting
// on it over shm or verbs (no UCX tcp connection to probe) waited for good.
TEST(TcpKeepalive, TheBootstrapConnectionIsProbedOnEveryTransport) {
  for (const uint64_t peer_timeout_ms : {uint64_t{120000}, uint64_t{0}})
    with_a_job(transport::TransportKind::kShm, peer_timeout_ms, [&] {
      // Over shared memory the only tcp connections are the bootstrap ones,
      // the worker's to the server and the lanes', both ends in this process.
      const std::vector<double> timers = keepalive_timers();
      if (!peer_timeout_ms) {
        EXPECT_TRUE(timers.empty()) << "--peer-timeout 0 armed " << timers.size() << " keepalive timer(s)";
        return;
      }
      ASSERT_GE(timers.size(), 2u) << "both ends of a bootstrap connection should be kept alive";
      for (double t : timers)
        EXPECT_GT(t, 40.0) << "a keepalive probe comes " << t << " s from now; --peer-timeout 120 puts the "
                           << "first 60 s after the last traffic";
    });
}

INSTANTIATE_TEST_SUITE_P(Transports, PsFaultTest,
                         testing::Values(transport::TransportKind::kTcp, transport::TransportKind::kShm),
                         transport_param_name);

}  // namespace
}  // namespace rdmaps::test
