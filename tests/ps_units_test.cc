// Pieces of the parameter server that need no process: update rules against
// a float64 evaluation of DESIGN.md's formulas, configuration parsing, the
// table partition, wire-format decoding.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>

#include "rdmaps/config.h"
#include "rdmaps/error.h"
#include "src/apply_pool.h"
#include "src/bf16.h"
#include "src/capabilities.h"
#include "src/partition.h"
#include "src/protocol.h"
#include "src/update_rules.h"

namespace rdmaps::ps {
namespace {

struct Reference {
  std::vector<double> w, state;
};

// DESIGN.md, in double precision.
void reference_step(UpdateRule rule, const UpdateParams& p, double lr, Reference& r, const std::vector<float>& g,
                    const std::vector<float>& bak) {
  for (size_t i = 0; i < r.w.size(); ++i) {
    double gi = g[i], wi = r.w[i], b = bak[i];
    switch (rule) {
      case UpdateRule::kSgd:
        r.w[i] = wi - lr * gi;
        break;
      case UpdateRule::kMomentum:
        r.state[i] = p.momentum * r.state[i] + gi;
        r.w[i] = wi - lr * r.state[i];
        break;
      case UpdateRule::kDcAsgdConstant:
        r.w[i] = wi - lr * (gi + p.lambda * gi * gi * (wi - b));
        break;
      case UpdateRule::kDcAsgdAdaptive:
        r.state[i] = p.ms_momentum * r.state[i] + (1 - p.ms_momentum) * gi * gi;
        r.w[i] = wi - lr * (gi + (p.lambda0 / std::sqrt(r.state[i] + p.eps)) * gi * gi * (wi - b));
        break;
    }
  }
}

TEST(UpdateRules, EveryRuleMatchesItsFloat64FormulaOverManySteps) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> u(-1, 1);
  const size_t n = 4099;  // not a multiple of any vector width
  for (UpdateRule rule :
       {UpdateRule::kSgd, UpdateRule::kMomentum, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    SCOPED_TRACE(rule_name(rule));
    UpdateParams p;
    p.rule = rule;
    p.lambda = 0.3f;
    p.lambda0 = 0.5f;
    std::vector<float> w(n), state(n, 0.0f), g(n), bak(n);
    for (auto& x : w) x = u(rng);
    for (auto& x : bak) x = u(rng);
    Reference r{std::vector<double>(w.begin(), w.end()), std::vector<double>(n, 0.0)};
    for (int step = 0; step < 10; ++step) {
      for (auto& x : g) x = u(rng);
      apply_update(p, 0.05f, w.data(), g.data(), bak.data(), state.data(), n);
      reference_step(rule, p, 0.05f, r, g, bak);
    }
    double worst = 0;
    for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(w[i] - r.w[i]) / std::max(1.0, std::abs(r.w[i])));
    EXPECT_LT(worst, 1e-6);
  }
}

TEST(ApplyPool, EveryElementIsCoveredExactlyOnce) {
  for (unsigned threads : {1u, 2u, 3u}) {
    ApplyPool pool(threads);
    for (size_t n : {size_t{0}, size_t{5}, size_t{32767}, size_t{32768}, size_t{100003}, size_t{262144}}) {
      std::vector<std::atomic<int>> hits(n);
      pool.run(n, [&](size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) hits[i].fetch_add(1);
      });
      size_t wrong = 0;
      for (auto& h : hits) wrong += h.load() != 1;
      EXPECT_EQ(wrong, 0u) << threads << " threads, " << n << " elements";
    }
  }
}

TEST(Config, FlagsAndEnvironmentParseAndBadValuesNameTheirSource) {
  Config c;
  std::vector<std::string> rest;
  parse_config(
      c, {"--staleness", "inf", "--rule", "dc-asgd-a", "--lr=0.5", "--check-nan", "--push-path", "am", "--other", "x"},
      &rest);
  EXPECT_EQ(c.staleness, kInfiniteStaleness);
  EXPECT_EQ(c.rule, UpdateRule::kDcAsgdAdaptive);
  EXPECT_FLOAT_EQ(c.learning_rate, 0.5f);
  EXPECT_TRUE(c.check_nan);
  EXPECT_EQ(c.push_path, PushPath::kAm);
  EXPECT_EQ(rest, (std::vector<std::string>{"--other", "x"}));

  auto message = [](std::vector<std::string> args) {
    Config cc;
    try {
      parse_config(cc, args, nullptr);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kInvalidArgument);
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message({"--rule", "adam"}).find("--rule"), std::string::npos);
  EXPECT_NE(message({"--staleness", "-1"}).find("--staleness"), std::string::npos);
  EXPECT_NE(message({"--lr", "fast"}).find("'fast'"), std::string::npos);
  EXPECT_NE(message({"--shard-floats", "0"}).find("--shard-floats"), std::string::npos);
  EXPECT_NE(message({"--lr"}).find("needs a value"), std::string::npos);
  setenv("RDMAPS_TAU_MAX", "many", 1);
  EXPECT_NE(message({}).find("RDMAPS_TAU_MAX"), std::string::npos);
  unsetenv("RDMAPS_TAU_MAX");
}

TEST(Partition, RangesAreBalancedContiguousAndCutIntoShards) {
  Partition p({{"a", 1000}, {"b", 2001}}, 3, 300);
  EXPECT_EQ(p.total_floats(), 3001u);
  uint64_t next = 0;
  for (uint32_t s = 0; s < 3; ++s) {
    Range r = p.server_range(s);
    EXPECT_EQ(r.begin, next);
    EXPECT_LE(r.size() - 3001 / 3, 1u) << "servers differ by at most one float";
    next = r.end;
    uint64_t covered = r.begin;
    for (uint32_t k = 0; k < p.shard_count(s); ++k) {
      Range sh = p.shard(s, k);
      EXPECT_EQ(sh.begin, covered);
      EXPECT_LE(sh.size(), 300u);
      covered = sh.end;
    }
    EXPECT_EQ(covered, r.end);
  }
  EXPECT_EQ(next, 3001u);
  EXPECT_EQ(p.tensor("b").begin, 1000u);
  EXPECT_THROW(p.tensor("c"), Error);
  EXPECT_THROW(Partition({{"tiny", 1}}, 2, 10), Error);
}

TEST(Protocol, MalformedHelloIsRejectedNamingThePeer) {
  Hello h;
  h.worker = 3;
  h.tensors = {{"w", 10}};
  h.receive_region = {1, 2, 3};
  auto bytes = encode(h);
  Hello back = decode_hello(bytes, "peer-7");
  EXPECT_EQ(back.worker, 3u);
  EXPECT_EQ(back.tensors[0].name, "w");
  for (size_t cut : {size_t{3}, size_t{12}, bytes.size() - 1}) {
    std::vector<uint8_t> truncated(bytes.begin(), bytes.begin() + static_cast<long>(cut));
    try {
      decode_hello(truncated, "peer-7");
      ADD_FAILURE() << "truncated hello accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kProtocol);
      EXPECT_NE(std::string(e.what()).find("peer-7"), std::string::npos);
    }
  }
  Hello empty = h;
  empty.tensors.clear();
  EXPECT_THROW(decode_hello(encode(empty), "peer-7"), Error);
  Hello zero = h;
  zero.tensors[0].floats = 0;
  EXPECT_THROW(decode_hello(encode(zero), "peer-7"), Error);
}

}  // namespace
}  // namespace rdmaps::ps

namespace rdmaps::test {
namespace {

transport::ucx::UcxCapabilities ucx_of(unsigned major, unsigned minor, bool cuda) {
  transport::ucx::UcxCapabilities u;
  u.major = major;
  u.minor = minor;
  u.cuda = cuda;
  return u;
}

// Independent bf16 reference: round x to 8 significant bits, ties to even, in double.
double bf16_reference(float x) {
  if (x == 0 || !std::isfinite(x)) return x;
  int e;
  double m = std::frexp(static_cast<double>(x), &e);  // x = m * 2^e, 0.5 <= |m| < 1
  double scaled = std::ldexp(m, 8);                   // 8 significant bits
  double r = std::nearbyint(scaled);                  // default rounding: to nearest even
  return std::ldexp(r, e - 8);
}

TEST(Bf16, RoundsToNearestEvenLikeAnIndependentReference) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<uint32_t> bits;
  int checked = 0;
  for (int i = 0; i < 200000; ++i) {
    uint32_t u = bits(rng);
    float x;
    std::memcpy(&x, &u, 4);
    if (!std::isfinite(x) || std::fabs(x) > 3.0e38f || std::fabs(x) < 1e-37f) continue;  // normals only
    ASSERT_EQ(static_cast<double>(from_bf16(to_bf16(x))), bf16_reference(x)) << "x = " << x;
    ++checked;
  }
  EXPECT_GT(checked, 100000);
  EXPECT_TRUE(std::isnan(from_bf16(to_bf16(std::nanf("")))));
  EXPECT_EQ(from_bf16(to_bf16(1.0f + 1.0f / 256)), 1.0f);              // tie: to even
  EXPECT_EQ(from_bf16(to_bf16(1.0f + 3.0f / 256)), 1.0f + 1.0f / 64);  // tie: up to even
}

TEST(Bf16, ErrorFeedbackKeepsTheSentSumWithinOneRoundingOfTheTrueSum) {
  constexpr size_t n = 1000;
  std::vector<float> g(n), residual(n, 0.0f);
  std::vector<uint16_t> out(n);
  std::vector<double> sent(n, 0.0), truth(n, 0.0);
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int step = 0; step < 500; ++step) {
    for (auto& x : g) x = normal(rng) * 1e-3f + 1e-5f;  // a small bias plain rounding would lose
    compress_bf16(g.data(), residual.data(), out.data(), n);
    for (size_t i = 0; i < n; ++i) {
      sent[i] += from_bf16(out[i]);
      truth[i] += g[i];
    }
  }
  for (size_t i = 0; i < n; ++i)
    ASSERT_NEAR(sent[i] + residual[i], truth[i], 1e-6) << "mass lost at " << i;  // nothing lost, only delayed
}

TEST(Capabilities, GpuPathIsDirectOnlyWithCudaAwareUcxFrom116) {
  std::string why;
  EXPECT_EQ(choose_gpu_path(ucx_of(1, 17, true), 0, &why), GpuPath::kNone);
  EXPECT_EQ(choose_gpu_path(ucx_of(1, 13, false), 1, &why), GpuPath::kStaged);
  EXPECT_NE(why.find("host memory only"), std::string::npos) << why;
  EXPECT_EQ(choose_gpu_path(ucx_of(1, 15, true), 2, &why), GpuPath::kStaged);
  EXPECT_NE(why.find("before 1.16"), std::string::npos) << why;
  EXPECT_EQ(choose_gpu_path(ucx_of(1, 16, true), 1, &why), GpuPath::kDirect);
  EXPECT_EQ(choose_gpu_path(ucx_of(2, 0, true), 1, &why), GpuPath::kDirect);
}

TEST(Capabilities, ProbeOfThisMachineIsConsistent) {
  Capabilities caps = probe_capabilities();
  EXPECT_TRUE(caps.ucx.error.empty()) << caps.ucx.error;
  ASSERT_FALSE(caps.ucx.memory_types.empty());
  EXPECT_EQ(caps.ucx.memory_types[0], "host");
  EXPECT_EQ(caps.gpu_path, choose_gpu_path(caps.ucx, caps.gpu.device_count(), nullptr));
  EXPECT_NE(describe(caps).find("GPU path: "), std::string::npos);
  EXPECT_EQ(to_json(caps).front(), '{');
}

}  // namespace
}  // namespace rdmaps::test
