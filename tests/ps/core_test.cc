// The parameter server end to end: exact SGD, DC-ASGD against a float64
// reference, over tcp (active-message path) and shared memory (put path).
#include <sched.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <random>

#include "math/bf16.h"
#include "src/ps/server_report.h"
#include "src/ps/update_rules.h"
#include "tests/common/http_get.h"
#include "tests/common/update_reference.h"
#include "tests/ps/fixture.h"
#include "tests/transport/fixture.h"

namespace rdmaps::test {
namespace {

constexpr size_t kFloats = 10000;  // several shards of kShard floats
constexpr uint32_t kShard = 4096;
constexpr int kSteps = 100;

Config core_config(transport::TransportKind kind) { return sgd_config(kind, 0.05f, kShard); }

// A deterministic gradient of the parameters, different every step.
void gradient(const std::vector<float>& w, int step, uint64_t seed, std::vector<float>& g) {
  std::mt19937 rng(static_cast<uint32_t>(seed + step));
  std::uniform_real_distribution<float> noise(-0.1f, 0.1f);
  for (size_t i = 0; i < w.size(); ++i) g[i] = 0.5f * w[i] + noise(rng);
}

// One server, one worker `peer` that checks its parameters against
// sequential SGD; the server's stats once the worker left.
ServerStats train_exact_sgd(const char* peer, transport::TransportKind kind, const Config& c, uint64_t seed) {
  ServerGroup servers(1, 1, c);
  PeerProcess worker(peer, kind, 0, seed, {servers.addresses(), "0"});
  EXPECT_EQ(worker.wait(120s), 0) << "worker found parameters that differ from sequential SGD";
  servers.join();
  const ServerStats s = servers.server(0).stats();
  EXPECT_EQ(s.rejected, 0u);
  return s;
}

TEST_P(PsTest, OneWorkerSgdEqualsSequentialSgdBitForBit) {
  const ServerStats s = train_exact_sgd("sgd_worker", GetParam(), core_config(GetParam()), 7);
  EXPECT_EQ(s.pushes, static_cast<uint64_t>(kSteps) * ((kFloats + kShard - 1) / kShard));
}

// Trains `floats` parameters with `steps` SGD steps against the servers and
// sequential SGD beside them; 0 if every parameter matches bit for bit.
int exact_sgd_worker(const PeerArgs& args, const Config& c, size_t floats, int steps) {
  Client client(worker_options(args, c));
  client.declare("w", floats);
  client.connect();
  std::vector<float> w(floats), ref(floats), g(floats);
  std::mt19937 rng(static_cast<uint32_t>(args.seed));
  std::uniform_real_distribution<float> init(-1, 1);
  for (auto& x : ref) x = init(rng);
  client.init("w", ref);
  for (int step = 0; step < steps; ++step) {
    client.pull("w", w);
    gradient(w, step, args.seed, g);
    client.push("w", g);
    client.clock();
    for (size_t i = 0; i < floats; ++i) ref[i] = ref[i] - c.learning_rate * g[i];  // sequential SGD
  }
  client.pull("w", w);
  size_t differ = 0;
  for (size_t i = 0; i < floats; ++i) differ += std::memcmp(&w[i], &ref[i], 4) != 0;
  if (differ) std::fprintf(stderr, "exact_sgd_worker: %zu of %zu parameters differ\n", differ, floats);
  return differ ? 1 : 0;
}

RDMAPS_TEST_PEER(sgd_worker) { return exact_sgd_worker(args, core_config(args.transport), kFloats, kSteps); }

// Shards of the default 1 MiB, a lane range of several of them and a partial
// last one: a write-back over active messages goes in several messages (about
// 1 MiB each) and must land whole, each at its offset, lanes not starting at 0.
constexpr size_t kBigFloats = 7 * (size_t{1} << 18) / 2;  // 3.5 MiB
Config big_shard_config(transport::TransportKind kind) {
  Config c = sgd_config(kind, 0.05f, 1u << 18);
  c.server_threads = 2;  // lanes of 2 and 1.5 shards
  return c;
}

TEST_P(PsTest, WriteBacksInSeveralMessagesLandWhole) {
  train_exact_sgd("big_shard_worker", GetParam(), big_shard_config(GetParam()), 11);
}

RDMAPS_TEST_PEER(big_shard_worker) { return exact_sgd_worker(args, big_shard_config(args.transport), kBigFloats, 8); }

// A batched pull of tensors spread over two servers of two threads (lanes)
// each: one request per lane, every value where it belongs.
Config batched_config(transport::TransportKind kind) {
  Config c = core_config(kind);
  c.learning_rate = 1.0f;
  c.shard_floats = 1000;  // 4500 floats: 3 shards per server, lanes of 2 and 1
  c.staleness = kInfiniteStaleness;
  c.server_threads = 2;
  return c;
}

TEST_P(PsTest, BatchedPullAcrossServersAsksEachLaneOnce) {
  Config c = batched_config(GetParam());
  ServerGroup servers(2, 1, c);
  PeerProcess worker("batched_puller", GetParam(), 0, 5, {servers.addresses(), "0"});
  EXPECT_EQ(worker.wait(60s), 0) << "a batched pull returned wrong values or asked too often";
}

RDMAPS_TEST_PEER(batched_puller) {
  Config c = batched_config(args.transport);
  Client client(worker_options(args, c));
  const std::vector<std::pair<std::string, size_t>> tensors = {{"a", 1500}, {"b", 700}, {"c", 2300}};
  for (const auto& [name, n] : tensors) client.declare(name, n);
  client.connect();
  std::vector<std::vector<float>> want, got;
  for (size_t t = 0; t < tensors.size(); ++t) {
    std::vector<float> w(tensors[t].second), g(tensors[t].second);
    for (size_t i = 0; i < w.size(); ++i) {
      w[i] = static_cast<float>(t * 10000 + i);
      g[i] = static_cast<float>(i % 7);
    }
    client.init(tensors[t].first, w);
    client.push(tensors[t].first, g);
    for (size_t i = 0; i < w.size(); ++i) w[i] -= g[i];  // SGD at lr 1
    want.push_back(w);
    got.emplace_back(w.size(), std::nanf(""));
  }
  std::vector<PullTarget> targets;
  for (size_t t = 0; t < tensors.size(); ++t) targets.push_back({tensors[t].first, got[t]});
  const uint64_t before = client.stats().pulls;
  client.pull(targets);
  const uint64_t requests = client.stats().pulls - before;
  if (requests != 4) {
    std::fprintf(stderr, "batched_puller: %llu pull requests for 2 servers of 2 lanes\n",
                 static_cast<unsigned long long>(requests));
    return 1;
  }
  for (size_t t = 0; t < tensors.size(); ++t)
    if (std::memcmp(got[t].data(), want[t].data(), want[t].size() * 4) != 0) {
      std::fprintf(stderr, "batched_puller: tensor '%s' differs\n", tensors[t].first.c_str());
      return 2;
    }
  return 0;
}

// SSP with skip_pulls serves pulls from the receive region: every target gets
// its values, also after an earlier pull copied the same shards to other
// targets as they landed (docs/protocol.md "Pull").
TEST_P(PsTest, PullsServedFromTheCacheFillEveryTarget) {
  Config c = batched_config(GetParam());
  c.staleness = 10;
  c.skip_pulls = true;
  ServerGroup servers(2, 1, c);
  PeerProcess worker("cached_puller", GetParam(), 0, 5, {servers.addresses(), "0"});
  EXPECT_EQ(worker.wait(60s), 0) << "a pull served from the cache left a target without its values";
}

RDMAPS_TEST_PEER(cached_puller) {
  Config c = batched_config(args.transport);
  c.staleness = 10;
  c.skip_pulls = true;
  Client client(worker_options(args, c));
  const std::vector<std::pair<std::string, size_t>> tensors = {{"a", 1500}, {"b", 700}, {"c", 2300}};
  std::vector<std::vector<float>> want;
  for (const auto& [name, n] : tensors) client.declare(name, n);
  client.connect();
  for (size_t t = 0; t < tensors.size(); ++t) {
    want.emplace_back(tensors[t].second);
    for (size_t i = 0; i < want[t].size(); ++i) want[t][i] = static_cast<float>(t * 10000 + i);
    client.init(tensors[t].first, want[t]);
  }
  uint64_t fetched = 0;
  for (int round = 0; round < 3; ++round) {
    if (round == 2) fetched = client.stats().pulls;
    std::vector<std::vector<float>> got;
    std::vector<PullTarget> targets;
    for (const auto& [name, n] : tensors) got.emplace_back(n, std::nanf(""));
    for (size_t t = 0; t < tensors.size(); ++t) targets.push_back({tensors[t].first, got[t]});
    // Round 0: each tensor alone, b before c: b's pull fetches only part of
    // the shard c starts in, which must not count as fetched. Round 1: the
    // batch fetches every shard whole. Round 2: each alone, from the cache.
    if (round == 0)
      for (size_t t : {1, 2, 0}) client.pull(std::span<const PullTarget>(&targets[t], 1));
    else if (round == 1)
      client.pull(targets);
    else
      for (const auto& target : targets) client.pull(std::span<const PullTarget>(&target, 1));
    for (size_t t = 0; t < tensors.size(); ++t)
      if (std::memcmp(got[t].data(), want[t].data(), want[t].size() * 4) != 0) {
        std::fprintf(stderr, "cached_puller: round %d: tensor '%s' differs\n", round, tensors[t].first.c_str());
        return 1;
      }
  }
  if (client.stats().pulls != fetched || client.stats().pulls_skipped < 3) {
    std::fprintf(stderr, "cached_puller: round 2 fetched %llu times and skipped %llu: the cache was not used\n",
                 static_cast<unsigned long long>(client.stats().pulls - fetched),
                 static_cast<unsigned long long>(client.stats().pulls_skipped));
    return 2;
  }
  return 0;
}

// A pull writes back the floats its tensors cover, not their whole shards:
// three tensors pulled one by one, sharing shards, move their own bytes once.
TEST_P(PsTest, APullOfOneTensorMovesOnlyItsFloats) {
  Config c = batched_config(GetParam());
  c.server_threads = 1;
  ServerGroup servers(1, 1, c);
  PeerProcess worker("single_puller", GetParam(), 0, 5, {servers.addresses(), "0"});
  EXPECT_EQ(worker.wait(60s), 0) << "a single tensor's pull returned wrong values";
  servers.join();
  EXPECT_EQ(servers.server(0).stats().bytes_out, (1500 + 700 + 2300) * 4u)
      << "pulls of tensors in shards of 1000 floats wrote back whole shards";
}

RDMAPS_TEST_PEER(single_puller) {
  Config c = batched_config(args.transport);
  c.server_threads = 1;
  Client client(worker_options(args, c));
  const std::vector<std::pair<std::string, size_t>> tensors = {{"a", 1500}, {"b", 700}, {"c", 2300}};
  for (const auto& [name, n] : tensors) client.declare(name, n);
  client.connect();
  for (size_t t : {1, 0, 2}) {
    std::vector<float> want(tensors[t].second), got(tensors[t].second, std::nanf(""));
    for (size_t i = 0; i < want.size(); ++i) want[i] = static_cast<float>(t * 10000 + i);
    client.init(tensors[t].first, want);
    client.pull(tensors[t].first, got);
    if (std::memcmp(got.data(), want.data(), want.size() * 4) != 0) {
      std::fprintf(stderr, "single_puller: tensor '%s' differs\n", tensors[t].first.c_str());
      return 1;
    }
  }
  return 0;
}

// Pulls into memory given to register_memory() land there with no copy out
// of the receive region: by message (tcp) where one registered target holds a
// whole message, by put (shm) where it holds all a lane writes back; the
// values are exact either way (docs/protocol.md "Landing in place").
constexpr size_t kRegShard = 262144;  // 1 MiB: one write-back message per shard

TEST_P(PsTest, PullsIntoRegisteredMemoryLandInPlace) {
  Config c = sgd_config(GetParam(), 1.0f, kRegShard);
  c.staleness = kInfiniteStaleness;
  c.server_threads = 2;  // a lane per shard: "a" alone in one, "b" and "c" in the other
  ServerGroup servers(1, 1, c);
  PeerProcess worker("registered_puller", GetParam(), 0, 5, {servers.addresses(), "0"});
  EXPECT_EQ(worker.wait(60s), 0) << "a pull into registered memory returned wrong values or did not land in place";
}

RDMAPS_TEST_PEER(registered_puller) {
  Config c = sgd_config(args.transport, 1.0f, kRegShard);
  c.staleness = kInfiniteStaleness;
  c.put_landing = PutLanding::kOn;  // over shm too, where UCX 1.13 emulates such puts
  // Declared before the client: registered memory outlives it.
  // "a" and "c" in place; "b" beside them. One float into its vector: 4
  // bytes off 16-byte alignment, where UCX 1.13 reported the registration 4
  // bytes early and every pull landed shifted over the float before it.
  std::vector<float> storage(2 * kRegShard + 1, std::nanf(""));
  const std::span<float> model(storage.data() + 1, 2 * kRegShard);
  std::vector<float> plain(kRegShard / 2, std::nanf(""));
  Client client(worker_options(args, c));
  client.declare("a", kRegShard);      // shard 0: one message, into registered memory
  client.declare("b", kRegShard / 2);  // half of shard 1, into plain memory
  client.declare("c", kRegShard / 2);  // the other half, registered, but its message is shared with "b"
  try {
    client.register_memory({});
    std::fprintf(stderr, "registered_puller: registering no memory was accepted\n");
    return 1;
  } catch (const Error& e) {
    if (e.code() != Errc::kInvalidArgument) return 1;
  }
  // 2^62 floats are 2^64 bytes: that wrapped to a 0-byte region, kept, which
  // then failed connect() for good.
  try {
    client.register_memory(std::span<float>(model.data(), size_t{1} << 62));
    std::fprintf(stderr, "registered_puller: 2^62 floats were accepted\n");
    return 1;
  } catch (const Error& e) {
    if (e.code() != Errc::kInvalidArgument || std::string(e.what()).find("address space") == std::string::npos) {
      std::fprintf(stderr, "registered_puller: 2^62 floats: %s\n", e.what());
      return 1;
    }
  }
  client.register_memory(model);
  client.connect();
  const std::span<float> a(model.data(), kRegShard), cc(model.data() + kRegShard, kRegShard / 2);
  std::vector<float> want_a(kRegShard), want_b(kRegShard / 2), want_c(kRegShard / 2), g(kRegShard);
  for (size_t i = 0; i < kRegShard; ++i) want_a[i] = static_cast<float>(i % 1013) * 0.5f;
  for (size_t i = 0; i < kRegShard / 2; ++i)
    want_b[i] = -static_cast<float>(i % 997), want_c[i] = float(i % 89) + 0.25f;
  client.init("a", want_a);
  client.init("b", want_b);
  client.init("c", want_c);
  const bool am = client.stats().push_paths.at(0) == "am";
  constexpr int kRounds = 3;
  for (int r = 0; r < kRounds; ++r) {
    for (size_t i = 0; i < kRegShard; ++i) g[i] = static_cast<float>((i + r) % 7);
    client.push("a", g);
    client.push("c", std::span<const float>(g.data(), kRegShard / 2));
    for (size_t i = 0; i < kRegShard; ++i) want_a[i] -= g[i];  // SGD at lr 1
    for (size_t i = 0; i < kRegShard / 2; ++i) want_c[i] -= g[i];
    const std::vector<PullTarget> targets = {{"a", a}, {"b", plain}, {"c", cc}};
    client.pull(targets);
    if (std::memcmp(a.data(), want_a.data(), kRegShard * 4) != 0 ||
        std::memcmp(plain.data(), want_b.data(), kRegShard / 2 * 4) != 0 ||
        std::memcmp(cc.data(), want_c.data(), kRegShard / 2 * 4) != 0) {
      std::fprintf(stderr, "registered_puller: round %d: a pulled tensor differs\n", r);
      return 1;
    }
  }
  // Only "a" lands in place: "c" shares its shard's message (am) and its lane's write-back (put) with "b".
  if (!std::isnan(storage[0])) {
    std::fprintf(stderr, "registered_puller: the float before the registered memory was written\n");
    return 1;
  }
  const uint64_t in_place = client.stats().pull_bytes_in_place, want = kRounds * kRegShard * 4;
  if (in_place != want) {
    std::fprintf(stderr, "registered_puller: %llu bytes landed in place over the %s path, expected %llu\n",
                 static_cast<unsigned long long>(in_place), am ? "am" : "put", static_cast<unsigned long long>(want));
    return 1;
  }
  std::vector<float> copy(kRegShard);  // the same tensor into plain memory: copied, as before
  client.pull("a", copy);
  if (std::memcmp(copy.data(), want_a.data(), kRegShard * 4) != 0 || client.stats().pull_bytes_in_place != want) {
    std::fprintf(stderr, "registered_puller: a pull into plain memory differs or counted as in place\n");
    return 1;
  }
  // The same tensor twice in one pull, registered first: both get it, by copy.
  std::fill(copy.begin(), copy.end(), std::nanf(""));
  std::fill(a.begin(), a.end(), std::nanf(""));
  const std::vector<PullTarget> twice = {{"a", a}, {"a", copy}};
  client.pull(twice);
  if (std::memcmp(a.data(), want_a.data(), kRegShard * 4) != 0 ||
      std::memcmp(copy.data(), want_a.data(), kRegShard * 4) != 0 || client.stats().pull_bytes_in_place != want) {
    std::fprintf(stderr, "registered_puller: a tensor pulled twice in one call differs in one of its targets\n");
    return 1;
  }
  return 0;
}

// Memory registered after connect() lands in place too: on the put path each
// lane takes it by a message in sequence with the pulls, as the next landing
// region; a region that ended up under the wrong number would receive another
// tensor's floats (docs/protocol.md "Landing in place").
// Runs `peer` as the one worker of one server: it must exit 0, and the server reject nothing.
void run_late_registrar(const Config& c, transport::TransportKind kind, const char* peer, const char* what) {
  ServerGroup servers(1, 1, c);
  PeerProcess worker(peer, kind, 0, 5, {servers.addresses(), "0"});
  EXPECT_EQ(worker.wait(60s), 0) << what;
  servers.join();
  EXPECT_EQ(servers.server(0).stats().rejected, 0u) << "a landing region offered after connect was refused";
}

TEST_P(PsTest, MemoryRegisteredAfterConnectLandsInPlace) {
  Config c = sgd_config(GetParam(), 1.0f, kRegShard);
  c.staleness = kInfiniteStaleness;
  c.server_threads = 2;  // a lane per tensor: each lane is offered every region
  run_late_registrar(c, GetParam(), "late_registrar",
                     "memory registered after connect() did not land in place, or landed wrong");
}

RDMAPS_TEST_PEER(late_registrar) {
  Config c = sgd_config(args.transport, 1.0f, kRegShard);
  c.staleness = kInfiniteStaleness;
  c.put_landing = PutLanding::kOn;  // over shm too, where UCX 1.13 emulates such puts
  // Declared before the client: registered memory outlives it.
  std::vector<float> early(kRegShard, std::nanf("")), late(kRegShard, std::nanf("")), spare(kRegShard, std::nanf("")),
      again(kRegShard, std::nanf(""));
  Client client(worker_options(args, c));
  client.declare("a", kRegShard);  // shard 0, lane 0
  client.declare("b", kRegShard);  // shard 1, lane 1
  client.register_memory(early);   // landing region 1, offered when connecting
  client.connect();
  std::vector<float> want_a(kRegShard), want_b(kRegShard);
  for (size_t i = 0; i < kRegShard; ++i)
    want_a[i] = static_cast<float>(i % 1013) * 0.5f, want_b[i] = -static_cast<float>(i % 977) - 0.25f;
  client.init("a", want_a);
  client.init("b", want_b);
  auto pull_both = [&](std::span<float> a, std::span<float> b, uint64_t in_place_after, const char* when) {
    client.pull(std::vector<PullTarget>{{"a", a}, {"b", b}});
    if (std::memcmp(a.data(), want_a.data(), kRegShard * 4) != 0 ||
        std::memcmp(b.data(), want_b.data(), kRegShard * 4) != 0) {
      std::fprintf(stderr, "late_registrar: %s: a pulled tensor differs\n", when);
      return false;
    }
    if (client.stats().pull_bytes_in_place != in_place_after) {
      std::fprintf(stderr, "late_registrar: %s: %llu bytes in place, expected %llu\n", when,
                   static_cast<unsigned long long>(client.stats().pull_bytes_in_place),
                   static_cast<unsigned long long>(in_place_after));
      return false;
    }
    return true;
  };
  constexpr uint64_t kShardBytes = kRegShard * 4;
  if (!pull_both(early, late, kShardBytes, "before registering 'late'")) return 1;  // "b" copied
  client.register_memory(late);                                                     // landing region 2
  client.register_memory(spare);                                                    // 3: never pulled into
  client.register_memory(again);                                                    // 4
  std::vector<float> g(kRegShard);
  for (int r = 0; r < 2; ++r) {
    for (size_t i = 0; i < kRegShard; ++i) g[i] = static_cast<float>((i + r) % 5);
    client.push("a", g);
    client.push("b", g);
    for (size_t i = 0; i < kRegShard; ++i) want_a[i] -= g[i], want_b[i] -= g[i];  // SGD at lr 1
    // Both lanes put into regions offered after connect(): "b" into 2, then "a" into 4 and "b" into 1.
    const bool ok = r == 0 ? pull_both(early, late, 3 * kShardBytes, "after registering 'late'")
                           : pull_both(again, early, 5 * kShardBytes, "into regions 4 and 1");
    if (!ok) return 1;
  }
  if (!std::all_of(spare.begin(), spare.end(), [](float v) { return std::isnan(v); })) {
    std::fprintf(stderr, "late_registrar: a pull wrote into memory no target named\n");
    return 1;
  }
  return 0;
}

// A slot of a few floats cannot carry a region's descriptor: such memory is
// not offered to the lanes after connect(), and pulls into it are copied,
// exact, with nothing written past a slot.
TEST_P(PsTest, ShardsSmallerThanADescriptorCopyMemoryRegisteredLater) {
  run_late_registrar(sgd_config(GetParam(), 1.0f, 8), GetParam(), "tiny_late_registrar",
                     "memory registered late with tiny shards came back wrong");
}

RDMAPS_TEST_PEER(tiny_late_registrar) {
  constexpr size_t kFloats = 64;  // 8 shards of 8 floats: 32-byte slot payloads
  Config c = sgd_config(args.transport, 1.0f, 8);
  c.put_landing = PutLanding::kOn;
  std::vector<float> late(kFloats, std::nanf(""));
  Client client(worker_options(args, c));
  client.declare("t", kFloats);
  client.connect();
  client.register_memory(late);
  std::vector<float> want(kFloats);
  for (size_t i = 0; i < kFloats; ++i) want[i] = static_cast<float>(i) * 1.5f - 9.0f;
  client.init("t", want);
  client.pull("t", late);
  if (std::memcmp(late.data(), want.data(), kFloats * 4) != 0) {
    std::fprintf(stderr, "tiny_late_registrar: the pulled tensor differs\n");
    return 1;
  }
  // By message (tcp) each shard's write-back lands in it; by put nothing was offered, so all is copied.
  const bool am = client.stats().push_paths.at(0) == "am";
  if (client.stats().pull_bytes_in_place != (am ? kFloats * 4 : 0)) {
    std::fprintf(stderr, "tiny_late_registrar: %llu bytes in place over the %s path\n",
                 static_cast<unsigned long long>(client.stats().pull_bytes_in_place), am ? "am" : "put");
    return 1;
  }
  return 0;
}

// A tensor that starts inside a shard and ends inside the next: its two
// messages land in place, and the copy at the pull's end (for what did not
// come by message) leaves them alone.
TEST_P(PsTest, ATensorAcrossShardsLandsInPlaceWhole) {
  Config c = sgd_config(GetParam(), 1.0f, kRegShard);
  ServerGroup servers(1, 1, c);
  PeerProcess worker("unaligned_puller", GetParam(), 0, 5, {servers.addresses(), "0"});
  EXPECT_EQ(worker.wait(60s), 0) << "a tensor across shards, pulled into registered memory, came back wrong";
}

RDMAPS_TEST_PEER(unaligned_puller) {
  constexpr size_t kHead = 100, kFloats = kRegShard + 37'856;  // [100, 300100): shard 0's tail, shard 1's head
  std::vector<float> y(kFloats, std::nanf(""));
  Config c = sgd_config(args.transport, 1.0f, kRegShard);
  c.put_landing = PutLanding::kOn;
  Client client(worker_options(args, c));
  client.declare("x", kHead);
  client.declare("y", kFloats);
  client.register_memory(y);
  client.connect();
  std::vector<float> want(kFloats);
  for (size_t i = 0; i < kFloats; ++i) want[i] = static_cast<float>(i % 4099) - 7.5f;
  client.init("y", want);
  for (int r = 0; r < 2; ++r) {  // the second pull finds the receive region holding the first's values
    if (r == 1) {
      client.push("y", std::vector<float>(kFloats, 1.0f));
      for (float& v : want) v -= 1.0f;
    }
    client.pull("y", y);
    if (std::memcmp(y.data(), want.data(), kFloats * 4) != 0) {
      size_t i = 0;
      while (y[i] == want[i]) ++i;
      std::fprintf(stderr, "unaligned_puller: pull %d: float %zu is %g, expected %g\n", r, i, y[i], want[i]);
      return 1;
    }
  }
  if (client.stats().pull_bytes_in_place != 2 * kFloats * 4) {
    std::fprintf(stderr, "unaligned_puller: %llu bytes landed in place\n",
                 static_cast<unsigned long long>(client.stats().pull_bytes_in_place));
    return 1;
  }
  return 0;
}

// Tensors that are views of one registered buffer, in table order, take a
// message that spans them in place; a tensor the pull does not want is never
// written (it would be the user's memory for that tensor).
Config views_config(transport::TransportKind kind) {
  Config c = sgd_config(kind, 1.0f, kRegShard);
  c.server_threads = 1;  // one lane: the pull of "p" and "r" asks it twice
  c.put_landing = PutLanding::kOn;
  return c;
}

TEST_P(PsTest, ViewsOfOneBufferLandInPlaceButNeverAnUnwantedTensor) {
  ServerGroup servers(1, 1, views_config(GetParam()));
  PeerProcess worker("views_puller", GetParam(), 0, 5, {servers.addresses(), "0"});
  EXPECT_EQ(worker.wait(60s), 0) << "views of one registered buffer came back wrong, or an unwanted tensor was written";
}

RDMAPS_TEST_PEER(views_puller) {
  constexpr size_t kP = 100'000, kQ = 200'000, kR = 50'000,
                   kAll = kP + kQ + kR;  // shards [0, 262144), [262144, 350000)
  std::vector<float> flat(kAll, std::nanf(""));
  Client client(worker_options(args, views_config(args.transport)));
  client.declare("p", kP);
  client.declare("q", kQ);
  client.declare("r", kR);
  client.register_memory(flat);
  client.connect();
  std::vector<float> want(kAll);
  for (size_t i = 0; i < kAll; ++i) want[i] = static_cast<float>(i % 3001) * 0.25f;
  const std::span<float> p(flat.data(), kP), q(flat.data() + kP, kQ), r(flat.data() + kP + kQ, kR);
  client.init("p", std::span<const float>(want.data(), kP));
  client.init("q", std::span<const float>(want.data() + kP, kQ));
  client.init("r", std::span<const float>(want.data() + kP + kQ, kR));
  client.pull(std::vector<PullTarget>{{"p", p}, {"q", q}, {"r", r}});
  if (std::memcmp(flat.data(), want.data(), kAll * 4) != 0) {
    std::fprintf(stderr, "views_puller: the three views differ after one pull\n");
    return 1;
  }
  if (client.stats().pull_bytes_in_place != kAll * 4) {
    std::fprintf(stderr, "views_puller: %llu bytes landed in place, expected all of them\n",
                 static_cast<unsigned long long>(client.stats().pull_bytes_in_place));
    return 1;
  }
  // "p" and "r" only: a request each, for their floats alone (in different
  // shards), so they land in place again and "q" stays as it was.
  std::fill(flat.begin(), flat.end(), std::nanf(""));
  client.pull(std::vector<PullTarget>{{"p", p}, {"r", r}});
  if (std::memcmp(p.data(), want.data(), kP * 4) != 0 || std::memcmp(r.data(), want.data() + kP + kQ, kR * 4) != 0 ||
      !std::all_of(q.begin(), q.end(), [](float v) { return std::isnan(v); }) ||
      client.stats().pull_bytes_in_place != (kAll + kP + kR) * 4) {
    std::fprintf(stderr, "views_puller: pulling 'p' and 'r' wrote 'q' or missed a value\n");
    return 1;
  }
  return 0;
}

// bf16 wire: the server applies exactly what the worker encoded (half the
// bytes), and error feedback keeps the sum of applied gradients within one
// bf16 rounding of the sum of true gradients.
// Shards of more than the server's widening block (4096 floats), with a tail: each block applied where it belongs.
constexpr uint32_t kBf16Shard = 9000;

TEST_P(PsTest, Bf16PushesApplyTheEncodedValuesAndFeedTheErrorBack) {
  Config c = core_config(GetParam());
  c.shard_floats = kBf16Shard;
  c.wire = WireFormat::kBf16;
  c.learning_rate = 1.0f;
  ServerGroup servers(1, 1, c);
  PeerProcess worker("bf16_worker", GetParam(), 0, 11, {servers.addresses(), "0"});
  EXPECT_EQ(worker.wait(120s), 0) << "bf16 pushes were not applied as encoded";
  servers.join();
  auto s = servers.server(0).stats();
  EXPECT_EQ(s.bytes_in, static_cast<uint64_t>(kSteps) * kFloats * 2) << "a bf16 push moves 2 bytes per float";
  EXPECT_EQ(s.rejected, 0u);
}

RDMAPS_TEST_PEER(bf16_worker) {
  Config c = core_config(args.transport);
  c.shard_floats = kBf16Shard;
  c.wire = WireFormat::kBf16;
  c.learning_rate = 1.0f;
  Client client(worker_options(args, c));
  client.declare("w", kFloats);
  client.connect();
  std::vector<float> w(kFloats), g(kFloats), residual(kFloats, 0.0f), applied(kFloats, 0.0f);
  std::vector<double> truth(kFloats, 0.0), largest(kFloats, 0.0);
  std::vector<uint16_t> encoded(kFloats);
  std::mt19937 rng(static_cast<uint32_t>(args.seed));
  std::uniform_real_distribution<float> noise(-1, 1);
  for (int step = 0; step < kSteps; ++step) {
    for (auto& x : g) x = noise(rng) * (1.0f + static_cast<float>(step));  // many exponents
    client.push("w", g);
    client.clock();
    math::compress_bf16(g.data(), residual.data(), encoded.data(), kFloats);  // what the worker must have sent
    for (size_t i = 0; i < kFloats; ++i) {
      applied[i] = applied[i] - math::from_bf16(encoded[i]);  // the server's float32 SGD at lr 1
      truth[i] -= g[i];
      largest[i] = std::max(largest[i], std::fabs(static_cast<double>(g[i])));
    }
  }
  client.pull("w", w);
  size_t differ = 0, drift = 0;
  for (size_t i = 0; i < kFloats; ++i) {
    differ += std::memcmp(&w[i], &applied[i], 4) != 0;
    // Error feedback: what was applied lags the true sum by the last residual
    // only (half a bf16 step of the largest value sent), plus float32 sums.
    double bound = std::ldexp(largest[i], -8) + std::ldexp(std::fabs(truth[i]) + largest[i], -24) * 2 * kSteps;
    drift += std::fabs(static_cast<double>(w[i]) - truth[i]) > bound;
  }
  if (differ)
    std::fprintf(stderr, "bf16_worker: %zu of %zu parameters differ from the encoded pushes\n", differ, kFloats);
  if (drift) std::fprintf(stderr, "bf16_worker: %zu parameters drifted from the true sum\n", drift);
  return differ || drift ? 1 : 0;
}

// DC-ASGD: the worker pulls once, then pushes three gradients computed on that
// same (now stale) copy, so w != w_bak for the second and third (tau 1 and 2);
// a float64 evaluation of the paper's formula must agree to 1e-6 relative.
// "dc-asgd-a+bc": with the mean-square bias correction, t counting each shard's
// updates; "+bound": the compensation clamped at 0.01 of the gradient (most
// elements hit it); "+tau0": pushes more than 1 update stale step lr / tau.
Config dc_config(transport::TransportKind kind, const std::string& variant) {
  Config c = core_config(kind);
  c.rule = variant == "dc-asgd-c" ? UpdateRule::kDcAsgdConstant : UpdateRule::kDcAsgdAdaptive;
  c.ms_bias_correction = variant.find("+bc") != std::string::npos;
  c.dc_bound = variant.find("+bound") != std::string::npos ? 0.01f : 0.0f;
  c.dc_tau0 = variant.find("+tau0") != std::string::npos ? 1.0f : 0.0f;
  c.learning_rate = 0.1f;
  c.dc_lambda = 0.5f;
  c.dc_lambda0 = 0.3f;
  c.ms_momentum = 0.9f;
  return c;
}

TEST_P(PsTest, DcAsgdMatchesFloat64ReferenceWithAStaleWorker) {
  for (const char* variant : {"dc-asgd-c", "dc-asgd-a", "dc-asgd-a+bc", "dc-asgd-a+bc+bound+tau0"}) {
    SCOPED_TRACE(variant);
    ServerGroup servers(1, 1, dc_config(GetParam(), variant));
    PeerProcess worker("dc_worker", GetParam(), 0, 11, {servers.addresses(), "0", variant});
    EXPECT_EQ(worker.wait(120s), 0) << "parameters differ from the float64 DC-ASGD reference";
  }
}

RDMAPS_TEST_PEER(dc_worker) {
  Config c = dc_config(args.transport, args.extra.at(2));
  Client client(worker_options(args, c));
  client.declare("w", kFloats);
  client.connect();
  std::mt19937 rng(static_cast<uint32_t>(args.seed));
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> w0(kFloats), got(kFloats);
  std::vector<std::vector<float>> g(3, std::vector<float>(kFloats));
  for (auto& x : w0) x = u(rng);
  for (auto& gk : g)
    for (auto& x : gk) x = u(rng);
  client.init("w", w0);
  client.pull("w", got);  // w_bak := w0
  // All computed on w0: the first is applied to w0, the others to w1, w2 != w0
  // (tau 1, 2): delay compensation matters.
  for (const auto& gk : g) client.push("w", gk);
  client.clock();
  client.pull("w", got);
  double worst = 0;
  const math::UpdateParams p = ps::update_params(c);
  for (size_t i = 0; i < kFloats; ++i) {
    double w = w0[i], ms = 0;
    for (uint64_t t = 1; t <= g.size(); ++t) {  // each shard's update count; tau = t - 1
      const double tau = static_cast<double>(t - 1);
      const double lr = c.dc_tau0 > 0 && tau > c.dc_tau0 ? c.learning_rate * c.dc_tau0 / tau : c.learning_rate;
      w = reference_update(p, lr, c.ms_bias_correction ? reference_ms_scale(c.ms_momentum, t) : 1.0, w, g[t - 1][i],
                           w0[i], ms);
    }
    worst = std::max(worst, std::abs(got[i] - w) / std::max(1.0, std::abs(w)));
  }
  if (worst > 1e-6) std::fprintf(stderr, "dc_worker: worst relative error %g\n", worst);
  return worst <= 1e-6 ? 0 : 1;
}

// A worker's DC backup holds only what it was sent: a push before the
// worker's first pull of a shard is applied uncompensated (its backup was
// zeros, and w - 0 was compensated as if it were a delay), and a pull of one
// tensor of a shard makes the backup of the rest of it the parameters of then.
TEST_P(PsTest, DcAsgdCompensatesOnlyAgainstWhatTheWorkerWasSent) {
  constexpr size_t kEach = 64;  // "a" and "b" in one shard
  for (const char* variant : {"dc-asgd-c", "dc-asgd-a"}) {
    SCOPED_TRACE(variant);
    Config c = dc_config(GetParam(), variant);
    c.shard_floats = 1024;
    c.staleness = kInfiniteStaleness;
    ServerGroup servers(1, 2, c);
    auto connect = [&](uint32_t id) {
      auto client = std::make_unique<Client>(local_worker_options(servers.addresses(), c, id));
      client->declare("a", kEach);
      client->declare("b", kEach);
      client->connect();
      return client;
    };
    std::unique_ptr<Client> w0 = connect(0), w1 = connect(1);
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1, 1);
    auto random = [&] {
      std::vector<float> v(kEach);
      for (auto& x : v) x = u(rng);
      return v;
    };
    const std::vector<float> a0 = random(), b0 = random(), ga = random(), g0 = random(), gb = random();
    std::vector<float> got(kEach);
    w0->init("a", a0);
    w0->init("b", b0);
    w1->push("a", ga);   // worker 1 was sent nothing yet
    w1->pull("a", got);  // its backup of the shard: a as pushed, b as initialised
    w0->push("b", g0);   // worker 0 was sent nothing yet either
    w0->pull("a", got);  // the pull orders worker 0's push before worker 1's next
    w1->push("b", gb);   // compensated against b0, which it holds since its pull of "a"
    std::vector<float> a(kEach), b(kEach);
    w1->pull("a", a);
    w1->pull("b", b);
    const math::UpdateParams p = ps::update_params(c);
    double worst = 0;
    for (size_t i = 0; i < kEach; ++i) {
      double ms_a = 0, ms_b = 0;
      const double ra = reference_update(p, c.learning_rate, 1.0, a0[i], ga[i], a0[i], ms_a);
      double rb = reference_update(p, c.learning_rate, 1.0, b0[i], g0[i], b0[i], ms_b);
      rb = reference_update(p, c.learning_rate, 1.0, rb, gb[i], b0[i], ms_b);
      worst = std::max({worst, std::abs(a[i] - ra) / std::max(1.0, std::abs(ra)),
                        std::abs(b[i] - rb) / std::max(1.0, std::abs(rb))});
    }
    EXPECT_LE(worst, 1e-6) << "the worst relative error against the float64 reference";
  }
}

// Tensors that share a shard (a model's biases and norms, pushed one by one)
// are stale by workers' steps, not by pieces: a shard's version counted every
// piece, so the 8th tensor a lone worker pushed into a shard was 7 stale, and
// a staleness policy dropped or shrank its own steps.
TEST_P(PsTest, TensorsSharingAShardAreStaleByStepsNotPieces) {
  constexpr int kTensors = 8;
  constexpr size_t kEach = 64;  // all eight in one shard of 1024 floats
  Config c = sgd_config(GetParam(), 0.05f, 1024);
  c.staleness = kInfiniteStaleness;
  ServerGroup servers(1, 2, c);
  auto connect = [&](uint32_t id) {
    auto client = std::make_unique<Client>(local_worker_options(servers.addresses(), c, id));
    for (int t = 0; t < kTensors; ++t) client->declare("t" + std::to_string(t), kEach);
    client->connect();
    return client;
  };
  std::unique_ptr<Client> a = connect(0), b = connect(1);
  std::vector<float> v(kEach, 1.0f);
  auto pull_all = [&](Client& w) {
    for (int t = 0; t < kTensors; ++t) w.pull("t" + std::to_string(t), v);
  };
  // Every other tensor: none adjoins another, so each goes as a piece of its
  // own, and they rise through the shard (a lane keeps one range per step).
  auto push_all = [&](Client& w) {
    for (int t = 0; t < kTensors; t += 2) w.push("t" + std::to_string(t), v);
  };
  for (int t = 0; t < kTensors; ++t) a->init("t" + std::to_string(t), v);
  pull_all(*a);
  pull_all(*b);
  // A pull returns once the lane took in everything its worker sent before
  // it: the pulls order the two workers' pushes.
  push_all(*a);  // tau 0: its own pieces do not count against each other
  a->clock();
  pull_all(*a);
  push_all(*b);  // tau 1: one step of a's since b pulled
  b->clock();
  pull_all(*b);
  a->push("t3", v);  // tau 1: b's step
  a->push("t3", v);  // tau 2: the same floats again are a step of their own
  a->clock();
  pull_all(*a);
  // Out of the shard's order (autograd's order need not be the table's): t2
  // lies between t0 and t6 but over none of their floats, so tau 0 too.
  for (const char* t : {"t0", "t6", "t2"}) a->push(t, v);
  a->clock();
  pull_all(*a);
  const ServerStats s = servers.server(0).stats();
  EXPECT_EQ(s.staleness[0], uint64_t{kTensors / 2} + 3);
  EXPECT_EQ(s.staleness[1], uint64_t{kTensors / 2} + 1);
  EXPECT_EQ(s.staleness[2], 1u);
  EXPECT_EQ(s.staleness_max, 2u);
  EXPECT_EQ(s.pushes, uint64_t{kTensors + 5});
}

// The histogram's last bucket holds every tau from its index on: a quantile
// there is only known to be at least that, and says so; the max stays exact.
TEST(ServerStatsTest, AQuantileInTheLastBucketIsALowerBound) {
  ServerStats s;
  s.staleness.assign(5, 0);  // taus 0..3, then 4 or more
  s.staleness[3] = 2;
  s.staleness[4] = 3;
  s.staleness_max = 300;
  EXPECT_EQ(s.staleness_quantile_text(0.4), "3");
  EXPECT_EQ(s.staleness_quantile_text(0.5), ">=4");
  EXPECT_EQ(s.staleness_quantile(0.5), 4.0);
  s.staleness[4] = 0;
  EXPECT_EQ(s.staleness_quantile_text(1.0), "3");
  EXPECT_EQ(ServerStats{}.staleness_quantile_text(0.5), "0");
}

// The periodic line gives the interval's staleness, drops and rejections: a
// straggler that appears late in a run barely moved the p99 since the start.
TEST(ServerStatsTest, TheIntervalReportTellsTheIntervalFromTheWholeRun) {
  ServerStats last, now;
  last.staleness.assign(10, 0);
  last.staleness[0] = 10000;  // a long run without staleness
  last.pushes = 10000;
  last.dropped = 5;
  now = last;
  now.staleness[7] += 20;  // then a straggler: 20 pushes 7 stale
  now.pushes += 20;
  now.dropped += 2;
  now.staleness_max = 7;
  now.bytes_in = 2'000'000'000;
  const std::string line = ps::interval_report(now, last, 2.0, 4);
  EXPECT_NE(line.find("10 pushes/s, in 1.000 GB/s"), std::string::npos) << line;
  EXPECT_NE(line.find("staleness p50 7 p99 7, dropped 2, rejected 0 in the last 2.0 s"), std::string::npos) << line;
  EXPECT_NE(line.find("since the start: staleness max 7"), std::string::npos) << line;
  EXPECT_EQ(now.staleness_quantile_text(0.99), "0");  // what the line said before
  // An interval without a push has no staleness: "p50 0" read as fresh updates, during a stall.
  const std::string idle = ps::interval_report(now, now, 2.0, 4);
  EXPECT_NE(idle.find("0 pushes/s, in 0.000 GB/s, out 0.000 GB/s, staleness p50 - p99 -, dropped 0"), std::string::npos)
      << idle;
}

// A tensor that starts inside a shard, pulled alone, under every rule: the
// DC rules write back from the worker's copy, in chunks that end on shard
// boundaries over tcp and whole over a put; a put from inside a shard made a
// chunk of 0 floats, and the lane looped there for good, growing its memory.
TEST_P(PsTest, APullOfATensorThatStartsInsideAShardReturnsUnderEveryRule) {
  for (UpdateRule rule :
       {UpdateRule::kSgd, UpdateRule::kMomentum, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    SCOPED_TRACE(rule_name(rule));
    Config c = sgd_config(GetParam(), 0.5f, 1024);
    c.rule = rule;
    c.staleness = kInfiniteStaleness;
    ServerGroup servers(1, 1, c);
    ClientOptions o = local_worker_options(servers.addresses(), c, 0);
    o.timeout = std::chrono::seconds(20);
    Client client(o);
    client.declare("a", 100);   // [0, 100) of shard 0
    client.declare("b", 200);   // [100, 300): inside shard 0
    client.declare("c", 1500);  // [300, 1800): across shards 0 and 1
    client.connect();
    for (const auto& [name, n] : {std::pair<const char*, size_t>{"a", 100}, {"b", 200}, {"c", 1500}}) {
      std::vector<float> v(n);
      for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i) + 0.5f;
      client.init(name, v);
      std::vector<float> got(n, -1.0f);
      client.pull(name, got);
      EXPECT_EQ(got, v) << name;
    }
  }
}

// A worker's schedule may ask for a rate of 0 (a warm-up's first step): no
// parameter moves, but the step feeds the momentum buffer as torch's SGD does.
// Before protocol 11 a rate of 0 meant the server's own.
TEST_P(PsTest, AWorkersRateOfZeroMovesNoParameterAndFeedsMomentum) {
  Config c = sgd_config(GetParam(), 0.25f, 1024);
  c.rule = UpdateRule::kMomentum;
  c.momentum = 0.5f;
  c.staleness = kInfiniteStaleness;
  ServerGroup servers(1, 1, c);
  Client client(local_worker_options(servers.addresses(), c, 0));
  client.declare("w", 64);
  client.connect();
  std::vector<float> w(64, 1.0f);
  const std::vector<float> ones(64, 1.0f);
  client.init("w", w);
  auto step = [&](std::optional<float> lr) {
    client.set_learning_rate(lr);
    client.push("w", ones);
    client.clock();
    client.pull("w", w);  // returns once the lane took in the push
    return w;
  };
  EXPECT_EQ(step(0.0f), std::vector<float>(64, 1.0f));              // v = 1
  EXPECT_EQ(step(0.5f), std::vector<float>(64, 0.25f));             // v = 0.5 + 1: 1 - 0.5 * 1.5
  EXPECT_EQ(step(std::nullopt), std::vector<float>(64, -0.1875f));  // v = 0.75 + 1, the server's 0.25
  EXPECT_EQ(servers.server(0).stats().pushes, 3u);
  EXPECT_THROW(client.set_learning_rate(-1.0f), Error);
}

// A small push held back to go with its neighbours carries the rate it was
// pushed at: a rate set before it left applied to it (and 0 lost the step).
TEST_P(PsTest, ASmallPushHeldBackKeepsTheRateItWasPushedAt) {
  Config c = sgd_config(GetParam(), 0.5f, 1000);
  ServerGroup servers(1, 1, c);
  Client client(local_worker_options(servers.addresses(), c, 0));
  client.declare("a", 500);
  client.declare("b", 7);  // adjoins a: held back
  client.connect();
  std::vector<float> b(7, 0.0f);
  client.init("b", b);
  client.push("b", std::vector<float>(7, 1.0f));  // at the servers' 0.5
  client.set_learning_rate(0.0f);
  client.clock();
  client.pull("b", b);
  EXPECT_EQ(b, std::vector<float>(7, -0.5f));
}

// Pushes of small tensors that adjoin in a shard go as one message, in
// either order (autograd's is the reverse of the declaration's), and the
// parameters are sequential SGD's bit for bit; a push that does not adjoin
// the gathered ones, a clock and a pull send what was gathered first.
// A worker still connecting served zeros like one at step 0: the page says
// how many servers it joined.
TEST_P(PsTest, AWorkersMetricsSayHowManyServersItJoined) {
  Config c = sgd_config(GetParam(), 0.1f, 1024);
  ServerGroup servers(2, 1, c);
  ClientOptions o = local_worker_options(servers.addresses(), c, 0);
  o.metrics = "127.0.0.1:0";
  Client client(o);
  const std::string name = "\nrdmaps_worker_servers_joined{worker=\"0\"} ";
  auto joined = [&] {
    const std::string page = scrape(client.metrics_address());
    const size_t at = page.find(name);
    return at == std::string::npos ? std::string("none") : page.substr(at + name.size(), 1);
  };
  EXPECT_EQ(joined(), "0");
  client.declare("w", 100);
  client.connect();
  std::vector<float> w(100);
  client.pull("w", w);  // a call publishes what the page reads
  std::string seen = joined();
  for (auto until = std::chrono::steady_clock::now() + 20s; seen != "2" && std::chrono::steady_clock::now() < until;
       seen = joined())
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(seen, "2");
}

// A worker held by a straggler (SSP bound 0) shows its clock wait growing on
// its metrics endpoint while it waits: the copy a scrape reads was published
// only when a call returned, so a stuck worker read as idle and healthy.
TEST_P(PsTest, AWorkerHeldByAStragglerShowsItsClockWaitGrowing) {
  Config c = sgd_config(GetParam(), 0.1f, 1024);
  c.staleness = 0;
  ServerGroup servers(1, 2, c);
  ClientOptions held_options = local_worker_options(servers.addresses(), c, 0);
  held_options.metrics = "127.0.0.1:0";
  Client held(held_options), straggler(local_worker_options(servers.addresses(), c, 1));
  for (Client* client : {&held, &straggler}) {
    client->declare("w", 100);
    client->connect();
  }
  auto clock_wait = [&] {
    const std::string page = scrape(held.metrics_address());
    const std::string name = "\nrdmaps_worker_clock_wait_seconds_total{worker=\"0\"} ";
    const size_t at = page.find(name);
    return at == std::string::npos ? -1.0 : std::stod(page.substr(at + name.size()));
  };
  std::vector<float> g(100, 0.01f);
  held.push("w", g);
  // Not waiting: the page says what the stats say (a wait's start was read when there was none).
  EXPECT_EQ(clock_wait(), held.stats().clock_wait_seconds);
  auto waiting = std::async(std::launch::async, [&] { held.clock(); });  // waits for the straggler's clock 1
  // Waited for, not timed (a loaded machine runs the waiting thread late): the
  // wait shows while under way, then grows.
  const auto page_reaches = [&](double at_least) {
    double seen = clock_wait();
    for (auto until = std::chrono::steady_clock::now() + 20s;
         seen < at_least && std::chrono::steady_clock::now() < until; seen = clock_wait())
      std::this_thread::sleep_for(50ms);
    return seen;
  };
  const double first = page_reaches(0.01);
  EXPECT_GE(first, 0.01) << "the wait under way is not in the metrics";
  const double second = page_reaches(first + 0.8);
  EXPECT_GE(second - first, 0.8) << "the clock wait did not grow while the worker waited: " << first << " then "
                                 << second;
  ASSERT_EQ(waiting.wait_for(0s), std::future_status::timeout) << "the clock did not wait for the straggler";
  EXPECT_LT(second, 60.0) << "the wait under way is at most 40 s old";
  straggler.push("w", g);
  straggler.clock();
  ASSERT_EQ(waiting.wait_for(10s), std::future_status::ready);
  waiting.get();
  EXPECT_GE(held.stats().clock_wait_seconds, second);  // counted once it ended, as the metrics said meanwhile
}

TEST_P(PsTest, AdjoiningSmallTensorsGoAsOnePush) {
  for (WireFormat wire : {WireFormat::kF32, WireFormat::kBf16}) {
    SCOPED_TRACE(wire == WireFormat::kBf16 ? "bf16 wire" : "f32 wire");
    Config c = sgd_config(GetParam(), 0.5f, 1024);
    c.wire = wire;
    ServerGroup servers(1, 1, c);
    Client client(local_worker_options(servers.addresses(), c));
    // Shard 0: s0..s7 (64 floats each) then big's first 512; shard 1: big's last 988, then tail.
    for (int t = 0; t < 8; ++t) client.declare("s" + std::to_string(t), 64);
    client.declare("big", 1500);
    client.declare("tail", 10);
    client.connect();
    std::map<std::string, std::vector<float>> w, ref;
    for (int t = 0; t < 8; ++t) w["s" + std::to_string(t)].assign(64, 0.0f);
    w["big"].assign(1500, 0.0f);
    w["tail"].assign(10, 0.0f);
    for (auto& [name, values] : w) {
      for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(name.size() * 100 + i) / 64;
      client.init(name, values);
    }
    ref = w;
    const std::vector<std::vector<std::string>> orders = {
        {"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "big", "tail"},  // declaration order
        {"tail", "big", "s7", "s6", "s5", "s4", "s3", "s2", "s1", "s0"},  // backward's
    };
    uint64_t messages = 0;
    for (int step = 0; step < 4; ++step) {
      for (const auto& name : orders[step % 2]) {
        std::vector<float> g(w[name].size());  // eighths: exact in bf16, so both wires apply them exactly
        for (size_t i = 0; i < g.size(); ++i) g[i] = static_cast<float>((i + step + name.size()) % 5) / 8;
        client.push(name, g);
        for (size_t i = 0; i < g.size(); ++i) ref[name][i] -= c.learning_rate * g[i];
      }
      client.clock();
      for (auto& [name, values] : w) client.pull(name, values);
      for (const auto& [name, values] : w)
        ASSERT_EQ(std::memcmp(values.data(), ref[name].data(), values.size() * 4), 0)
            << "step " << step << ": '" << name << "' is not sequential SGD's";
      // Shard 0 holds s0..s7 and big's first 512 floats, shard 1 (998 floats)
      // big's other 988 and tail: one message per shard, in either order.
      const uint64_t now = client.stats().pushes;
      EXPECT_EQ(now - messages, 2u) << "step " << step;
      messages = now;
    }
    const ServerStats s = servers.server(0).stats();  // the last pull saw them all applied
    EXPECT_EQ(s.pushes, messages);
    EXPECT_EQ(s.bytes_in, 4u * 2022 * (wire == WireFormat::kBf16 ? 2 : 4)) << "every float once per step";
  }
}

// One worker pulls once, then pushes five gradients on that copy: per shard,
// tau runs 0, 1, 2, 3, 4.
TEST(StalenessPolicy, DropAboveTauMaxAndScaleByTau) {
  for (StalenessPolicy policy : {StalenessPolicy::kDropAboveMax, StalenessPolicy::kScaleByTau}) {
    Config c = core_config(transport::TransportKind::kShm);
    c.staleness_policy = policy;
    c.tau_max = 2;
    ServerGroup servers(1, 1, c);
    bool drop = policy == StalenessPolicy::kDropAboveMax;
    PeerProcess worker("stale_pusher", transport::TransportKind::kShm, 0, 3,
                       {servers.addresses(), "0", drop ? "drop" : "eta-tau"});
    EXPECT_EQ(worker.wait(60s), 0) << "parameters differ from the policy's reference";
    servers.join();
    uint64_t shards = (kFloats + kShard - 1) / kShard;
    auto s = servers.server(0).stats();
    EXPECT_EQ(s.dropped, drop ? 2 * shards : 0u);
    EXPECT_EQ(s.pushes, drop ? 3 * shards : 5 * shards);
    EXPECT_EQ(s.staleness[4], drop ? 0u : shards) << "tau 4 recorded once per shard";
  }
}

RDMAPS_TEST_PEER(stale_pusher) {
  Config c = core_config(args.transport);
  bool drop = args.extra.at(2) == "drop";
  c.staleness_policy = drop ? StalenessPolicy::kDropAboveMax : StalenessPolicy::kScaleByTau;
  c.tau_max = 2;
  Client client(worker_options(args, c));
  client.declare("w", kFloats);
  client.connect();
  std::vector<float> w(kFloats, 0.5f), g(kFloats), ref(kFloats, 0.5f);
  client.init("w", w);
  client.pull("w", w);
  for (uint64_t tau = 0; tau < 5; ++tau) {
    for (size_t i = 0; i < kFloats; ++i) g[i] = 0.1f * static_cast<float>(i % 7) + 0.01f * tau;
    client.push("w", g);
    if (drop && tau > c.tau_max) continue;
    float lr = c.learning_rate;
    if (!drop && tau > 1) lr /= static_cast<float>(tau);
    for (size_t i = 0; i < kFloats; ++i) ref[i] = ref[i] - lr * g[i];
  }
  client.clock();
  client.pull("w", w);
  double worst = 0;
  for (size_t i = 0; i < kFloats; ++i) worst = std::max(worst, static_cast<double>(std::abs(w[i] - ref[i])));
  if (worst > 1e-6) std::fprintf(stderr, "stale_pusher: worst difference %g\n", worst);
  return worst <= 1e-6 ? 0 : 1;
}

// A push carries the version of the worker's copy of what it pushes, not its
// shard's: tensors a, b and c share one shard, and a pull of some of them
// (alone, or around a gap) leaves the copy of the others as old as it was.
// Under the drop policy with tau_max 0 a push one update stale is dropped.
// The pull around a gap asks for the targets' floats alone: the server writes
// back (and refreshes its backup of) nothing else.
TEST_P(PsTest, APushCarriesTheVersionOfItsOwnCopyNotOfItsShard) {
  Config c = core_config(GetParam());
  c.staleness = kInfiniteStaleness;
  c.staleness_policy = StalenessPolicy::kDropAboveMax;
  c.tau_max = 0;
  c.put_landing = PutLanding::kOn;
  ServerGroup servers(1, 2, c);
  constexpr size_t n = 100;  // a, b and c: 300 floats, all in shard 0
  Client x(local_worker_options(servers.addresses(), c, 0)), y(local_worker_options(servers.addresses(), c, 1));
  for (Client* w : {&x, &y})
    for (const char* name : {"a", "b", "c"}) w->declare(name, n);
  x.connect();
  y.connect();
  // x's copy: one registered buffer in the table's layout, so that a pull may land in place.
  std::vector<float> table(3 * n, 1.0f), mine(3 * n), grad(n, 0.5f);
  x.register_memory(table);
  const std::span<float> a(table.data(), n), b(table.data() + n, n);
  const auto all = [](std::span<float> memory) {
    return std::vector<PullTarget>{
        {"a", memory.subspan(0, n)}, {"b", memory.subspan(n, n)}, {"c", memory.subspan(2 * n, n)}};
  };
  for (const char* name : {"a", "b", "c"}) x.init(name, a);
  x.pull(all(table));
  const auto y_pushes = [&](const char* name) {
    y.pull(all(mine));
    y.push(name, grad);  // a copy just pulled: tau 0, applied
    y.pull(all(mine));   // once this is answered
  };
  const auto dropped = [&] { return servers.server(0).stats().dropped; };

  y_pushes("b");
  x.pull("b", b);     // the shard's version word moves on; x's copy of a does not
  x.push("a", grad);  // on the copy of before y's push: tau 1
  x.pull("b", b);     // the push was taken (or dropped) before this pull was answered
  EXPECT_EQ(dropped(), 1u) << "a push of a stale copy of a counted the version of the b pulled since";
  EXPECT_FLOAT_EQ(b[0], 1.0f - c.learning_rate * 0.5f);

  for (const char* name : {"a", "c", "b"}) y_pushes(name);
  const uint64_t out_before = servers.server(0).stats().bytes_out;
  // a in registered memory, c not, in one shard: c is copied, whichever way a lands.
  std::vector<float> c_apart(n, std::nanf(""));
  const std::vector<PullTarget> around_b{{"a", a}, {"c", c_apart}};
  x.pull(around_b);
  EXPECT_EQ(servers.server(0).stats().bytes_out - out_before, 2 * n * sizeof(float)) << "b was written back too";
  const float once = 1.0f - c.learning_rate * 0.5f, twice = once - c.learning_rate * 0.5f;
  EXPECT_FLOAT_EQ(a[0], once);
  EXPECT_FLOAT_EQ(c_apart[n - 1], once);
  // Over tcp a lands in place; a put path puts both requests' floats in the receive region.
  EXPECT_EQ(x.stats().pull_bytes_in_place, (GetParam() == transport::TransportKind::kTcp ? 6 : 5) * n * sizeof(float));
  EXPECT_FLOAT_EQ(b[0], once) << "x's copy of b changed though not pulled";
  x.push("b", grad);  // on a copy three updates old
  x.push("a", grad);  // on a copy just pulled
  x.pull(all(table));
  EXPECT_EQ(dropped(), 2u) << "a push of a stale copy of b counted the versions of the a and c pulled around it";
  EXPECT_FLOAT_EQ(a[0], twice) << "the push of a fresh copy was not applied";
  EXPECT_FLOAT_EQ(b[0], twice);
}

// Under SSP with skip_pulls, a pull after barrier() fetches: the cached copy
// is within the bound (3) yet lacks the pushes before the barrier, which a
// barrier promises (Python's load_latest(), a final evaluation).
TEST_P(PsTest, APullAfterABarrierSeesEveryPushBeforeItWithSkipPulls) {
  Config c = core_config(GetParam());
  c.staleness = 3;
  c.skip_pulls = true;
  ServerGroup servers(1, 2, c);
  Client x(local_worker_options(servers.addresses(), c, 0)), y(local_worker_options(servers.addresses(), c, 1));
  for (Client* w : {&x, &y}) {
    w->declare("w", kFloats);
    w->connect();
  }
  std::vector<float> w(kFloats, 1.0f), g(kFloats, 0.5f);
  x.init("w", w);
  const auto both = [&](const std::function<void(Client&)>& then_y) {
    std::thread other([&] {
      then_y(y);
      y.barrier();
    });
    x.barrier();
    other.join();
  };
  both([](Client&) {});
  x.pull("w", w);  // fetched: the cache now holds the initial values
  both([&](Client& other) { other.push("w", g); });
  x.pull("w", w);
  EXPECT_FLOAT_EQ(w[0], 1.0f - c.learning_rate * 0.5f) << "served the cache from before the barrier";
  EXPECT_FLOAT_EQ(w[kFloats - 1], 1.0f - c.learning_rate * 0.5f);
  EXPECT_EQ(x.stats().pulls_skipped, 0u);
}

// Subnormal floats would slow the server's pass by a microcode assist each:
// the threads that apply read them as zero and flush results that would be
// subnormal (src/ps/flush_denormals.h). Seen from a worker: a subnormal gradient
// changes nothing, nor does a normal one whose step would land below the
// smallest normal float, while a normal step applies exactly.
TEST_P(PsTest, SubnormalGradientsAndStepsAreFlushedToZero) {
  Config c = core_config(GetParam());
  c.learning_rate = 0.5f;
  ServerGroup servers(1, 1, c);
  PeerProcess worker("subnormal_pusher", GetParam(), 0, 3, {servers.addresses(), "0"});
  EXPECT_EQ(worker.wait(60s), 0) << "the server applied subnormal values instead of flushing them";
}

RDMAPS_TEST_PEER(subnormal_pusher) {
  Config c = core_config(args.transport);
  c.learning_rate = 0.5f;
  Client client(worker_options(args, c));
  client.declare("w", kFloats);
  client.connect();
  std::vector<float> w(kFloats, 0.0f), g(kFloats);
  client.init("w", w);
  const float kinds[3] = {1e-39f, 2e-38f, 1e-30f};  // subnormal; normal, half of it subnormal; normal
  for (size_t i = 0; i < kFloats; ++i) g[i] = kinds[i % 3];
  client.push("w", g);
  client.clock();
  client.pull("w", w);
  const float want[3] = {0.0f, 0.0f, -5e-31f};
  size_t wrong = 0;
  for (size_t i = 0; i < kFloats; ++i)
    if (std::memcmp(&w[i], &want[i % 3], 4) != 0 && wrong++ < 3)
      std::fprintf(stderr, "subnormal_pusher: w[%zu] = %g after a step of 0.5 x %g, expected %g\n", i, w[i], g[i],
                   want[i % 3]);
  return wrong ? 1 : 0;
}

// The scheduling policy of every lane thread of this process, by thread name.
std::vector<int> lane_policies() {
  std::vector<int> out;
  for (const auto& t : process_threads())
    if (t.name.rfind("rdmaps-lane", 0) == 0) out.push_back(sched_getscheduler(t.tid));
  return out;
}

// Lanes poll in short sleeps. Where a server has several, a lane waking to find
// nothing must not preempt the threads doing the work (SCHED_BATCH); a single
// lane keeps the normal policy, so it takes its core back the moment work lands.
TEST(LaneScheduling, SeveralLanesNeverPreemptOnWakeupAOneLaneServerDoes) {
  for (uint32_t threads : {2u, 1u}) {
    Config c = core_config(transport::TransportKind::kShm);
    c.server_threads = threads;  // kFloats in 3 shards: lanes of 2 and 1 shards at T = 2
    ServerGroup servers(1, 1, c);
    PeerProcess worker("idle_after_a_push", transport::TransportKind::kShm, 0, 1, {servers.addresses(), "0"});
    for (int i = 0; i < 3000 && servers.server(0).stats().pushes == 0 && worker.running(); ++i)
      std::this_thread::sleep_for(10ms);
    ASSERT_GT(servers.server(0).stats().pushes, 0u) << "T = " << threads << ": the worker's push never arrived";
    const std::vector<int> policies = lane_policies();
    ASSERT_EQ(policies.size(), threads) << "threads named rdmaps-lane*";
    for (int policy : policies) EXPECT_EQ(policy, threads > 1 ? SCHED_BATCH : SCHED_OTHER) << "T = " << threads;
    worker.kill_now();
  }
}

RDMAPS_TEST_PEER(idle_after_a_push) {
  // Connected, idle: the test looks at the lanes, then kills this process.
  return train_one_step_then_idle(args, core_config(args.transport), kFloats);
}

INSTANTIATE_TEST_SUITE_P(Transports, PsTest,
                         testing::Values(transport::TransportKind::kTcp, transport::TransportKind::kShm),
                         transport_param_name);

}  // namespace
}  // namespace rdmaps::test
