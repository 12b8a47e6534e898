// Pieces of the parameter server that need no process: update rules against
// a float64 evaluation of docs/architecture.md's formulas, configuration parsing, the
// table partition, wire-format decoding.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>

#include "math/bf16.h"
#include "math/update_element.h"
#include "rdmaps/config.h"
#include "rdmaps/error.h"
#include "src/capabilities.h"
#include "src/flush_denormals.h"
#include "src/gpu_transfer.h"
#include "src/partition.h"
#include "src/protocol.h"
#include "src/update_rules.h"
#include "tests/update_reference.h"
#include "transport/context.h"
#include "transport/ucx/capabilities.h"

namespace rdmaps::ps {
namespace {

float element(const math::UpdateParams& p, math::Step s, float w, float g, float bak, float& state) {
  switch (p.rule) {
    case UpdateRule::kSgd:
      return update_element<UpdateRule::kSgd>(p, s, w, g, bak, state);
    case UpdateRule::kMomentum:
      return update_element<UpdateRule::kMomentum>(p, s, w, g, bak, state);
    case UpdateRule::kDcAsgdConstant:
      return update_element<UpdateRule::kDcAsgdConstant>(p, s, w, g, bak, state);
    case UpdateRule::kDcAsgdAdaptive:
      return update_element<UpdateRule::kDcAsgdAdaptive>(p, s, w, g, bak, state);
  }
  return NAN;
}

// Each rule over ten updates, t = 1..10 (the mean-square bias correction,
// when on, is largest at t = 1), by the Eigen CPU path and by the element
// function the CUDA kernel runs, both against the float64 reference.
TEST(UpdateRules, EveryRuleMatchesItsFloat64FormulaOverManySteps) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> u(-1, 1);
  const size_t n = 4099;  // not a multiple of any vector width
  struct Case {
    UpdateRule rule;
    bool corrected;
    float bound;
  };
  // Bound 0.2 with these lambdas clamps a good share of the elements both ways.
  for (Case c : {Case{UpdateRule::kSgd, false, 0}, Case{UpdateRule::kMomentum, false, 0},
                 Case{UpdateRule::kDcAsgdConstant, false, 0}, Case{UpdateRule::kDcAsgdAdaptive, false, 0},
                 Case{UpdateRule::kDcAsgdAdaptive, true, 0}, Case{UpdateRule::kDcAsgdAdaptive, true, 0.2f}}) {
    const UpdateRule rule = c.rule;
    SCOPED_TRACE(std::string(rule_name(rule)) + (c.corrected ? " with ms bias correction" : "") +
                 (c.bound > 0 ? " bounded at " + std::to_string(c.bound) : ""));
    math::UpdateParams p;
    p.rule = rule;
    p.ms_bias_correction = c.corrected;
    p.dc_bound = c.bound;
    p.lambda = 0.3f;
    p.lambda0 = 0.5f;
    std::vector<float> w(n), state(n, 0.0f), g(n), bak(n);
    for (auto& x : w) x = u(rng);
    for (auto& x : bak) x = u(rng);
    std::vector<float> w_el = w, state_el = state;
    std::vector<double> w_ref(w.begin(), w.end()), state_ref(n, 0.0);
    for (uint64_t t = 1; t <= 10; ++t) {
      for (auto& x : g) x = u(rng);
      const math::Step step = step_for(p, 0.05f, t);
      apply_update(p, step, w.data(), g.data(), bak.data(), state.data(), n);
      for (size_t i = 0; i < n; ++i) {
        w_el[i] = element(p, step, w_el[i], g[i], bak[i], state_el[i]);
        w_ref[i] = test::reference_update(p, 0.05f, c.corrected ? test::reference_ms_scale(p.ms_momentum, t) : 1.0,
                                          w_ref[i], g[i], bak[i], state_ref[i]);
      }
    }
    double worst = 0, worst_el = 0;
    for (size_t i = 0; i < n; ++i) {
      const double scale = std::max(1.0, std::abs(w_ref[i]));
      worst = std::max(worst, std::abs(w[i] - w_ref[i]) / scale);
      worst_el = std::max(worst_el, std::abs(w_el[i] - w_ref[i]) / scale);
    }
    EXPECT_LT(worst, 1e-6) << "CPU rules";
    EXPECT_LT(worst_el, 1e-6) << "element function (the CUDA kernel's arithmetic)";
  }
}

// DC-ASGD-a's staleness-aware step: full rate up to dc_tau0 updates stale,
// lr * dc_tau0 / tau beyond; no other rule is touched.
TEST(UpdateRules, DcAsgdAStepShrinksBeyondTau0) {
  math::UpdateParams p;
  p.rule = UpdateRule::kDcAsgdAdaptive;
  p.dc_tau0 = 4;
  EXPECT_FLOAT_EQ(step_for(p, 0.1f, 9, 0).lr, 0.1f);
  EXPECT_FLOAT_EQ(step_for(p, 0.1f, 9, 4).lr, 0.1f);
  EXPECT_FLOAT_EQ(step_for(p, 0.1f, 9, 8).lr, 0.05f);
  EXPECT_FLOAT_EQ(step_for(p, 0.1f, 99, 40).lr, 0.01f);
  p.dc_tau0 = 0;
  EXPECT_FLOAT_EQ(step_for(p, 0.1f, 99, 40).lr, 0.1f) << "off: the paper's formula";
  p.dc_tau0 = 4;
  for (UpdateRule other : {UpdateRule::kSgd, UpdateRule::kMomentum, UpdateRule::kDcAsgdConstant}) {
    p.rule = other;
    EXPECT_FLOAT_EQ(step_for(p, 0.1f, 99, 40).lr, 0.1f) << rule_name(other);
  }
}

TEST(UpdateRules, MeanSquareBiasCorrectionIsOneOverOneMinusBetaToTheT) {
  math::UpdateParams p;
  p.rule = UpdateRule::kDcAsgdAdaptive;
  p.ms_momentum = 0.95f;
  EXPECT_EQ(step_for(p, 0.1f, 1).ms_scale, 1.0f) << "off: the paper's formula";
  p.ms_bias_correction = true;
  for (uint64_t t : {uint64_t{1}, uint64_t{2}, uint64_t{20}, uint64_t{1000}, uint64_t{1} << 40})
    EXPECT_NEAR(step_for(p, 0.1f, t).ms_scale, test::reference_ms_scale(0.95f, t),
                1e-6 * test::reference_ms_scale(0.95f, t))
        << "t = " << t;
  EXPECT_FLOAT_EQ(step_for(p, 0.1f, 1).lr, 0.1f);
  p.rule = UpdateRule::kSgd;
  EXPECT_EQ(step_for(p, 0.1f, 1).ms_scale, 1.0f) << "only DC-ASGD-a reads the mean square";
}

TEST(FlushDenormals, SubnormalsAreZeroWhileTheGuardLivesAndTheModeComesBack) {
  volatile float subnormal = 1e-39f, one = 1.0f, small = 1e-20f;
  {
    FlushDenormals flush;
    EXPECT_EQ(subnormal * one, 0.0f) << "subnormal input read as zero";
    EXPECT_EQ(small * small, 0.0f) << "subnormal result flushed to zero";
    // Every rule, fed gradients of 1e-20..1e-40, leaves no subnormal behind.
    for (UpdateRule rule :
         {UpdateRule::kSgd, UpdateRule::kMomentum, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
      math::UpdateParams p;
      p.rule = rule;
      p.ms_bias_correction = true;
      p.dc_bound = 1;
      const size_t n = 1000;
      std::vector<float> w(n, 0.0f), g(n), bak(n, 0.0f), state(n, 0.0f);
      for (size_t i = 0; i < n; ++i) g[i] = std::pow(10.0f, -20.0f - 20.0f * static_cast<float>(i) / n);
      for (uint64_t t = 1; t <= 3; ++t)
        apply_update(p, step_for(p, 0.1f, t), w.data(), g.data(), bak.data(), state.data(), n);
      size_t subnormals = 0;
      for (size_t i = 0; i < n; ++i)
        subnormals += std::fpclassify(w[i]) == FP_SUBNORMAL || std::fpclassify(state[i]) == FP_SUBNORMAL;
      EXPECT_EQ(subnormals, 0u) << rule_name(rule);
    }
  }
  EXPECT_GT(subnormal * one, 0.0f) << "the thread's previous mode is restored";
}

// The staged path's default ring: 8 MiB in flight, never fewer than 3 chunks.
TEST(Config, StagingDepthCoversEightMebibytes) {
  EXPECT_EQ(ps::staging_depth_for(1u << 20), 8);
  EXPECT_EQ(ps::staging_depth_for(3u << 20), 3);
  EXPECT_EQ(ps::staging_depth_for(4u << 20), 3);
  EXPECT_EQ(ps::staging_depth_for(256u << 10), 32);
  EXPECT_EQ(ps::staging_depth_for(4096), 64);
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
  EXPECT_NE(message({"--staging-depth", "65"}).find("--staging-depth"), std::string::npos);
  parse_config(c, {"--staging-depth", "5"}, nullptr);
  EXPECT_EQ(c.staging_depth, 5u);
  EXPECT_NE(message({"--staleness", "-1"}).find("--staleness"), std::string::npos);
  EXPECT_NE(message({"--lr", "fast"}).find("'fast'"), std::string::npos);
  EXPECT_NE(message({"--shard-floats", "0"}).find("--shard-floats"), std::string::npos);
  EXPECT_NE(message({"--lr"}).find("needs a value"), std::string::npos);
  EXPECT_NE(message({"--ms-momentum", "1"}).find("--ms-momentum: '1' is not in [0, 1)"), std::string::npos);
  EXPECT_NE(message({"--momentum", "-0.5"}).find("--momentum"), std::string::npos);
  Config on;
  parse_config(on, {"--ms-bias-correction", "--rule", "dc-asgd-a"}, nullptr);
  EXPECT_TRUE(on.ms_bias_correction);
  EXPECT_NE(describe(on).find("ms-bias-correction on"), std::string::npos);
  EXPECT_NE(message({"--ms-bias-correction=maybe"}).find("--ms-bias-correction: 'maybe' is not on or off"),
            std::string::npos);
  EXPECT_NE(message({"--eps", "0"}).find("--eps: '0' is not a positive number"), std::string::npos);
  // The robust DC-ASGD-a is the default; the paper's exact formula is two flags away.
  Config defaults;
  EXPECT_TRUE(defaults.ms_bias_correction);
  EXPECT_FLOAT_EQ(defaults.dc_bound, 1.0f);
  EXPECT_FLOAT_EQ(defaults.dc_tau0, 4.0f);
  EXPECT_FLOAT_EQ(defaults.dc_lambda0, 32.0f);
  EXPECT_FALSE(defaults.skip_pulls) << "SSP pulls every clock unless asked to skip";
  Config paper;
  parse_config(paper,
               {"--rule", "dc-asgd-a", "--ms-bias-correction", "off", "--dc-bound", "off", "--dc-tau0", "off",
                "--staleness", "3", "--skip-pulls"},
               nullptr);
  EXPECT_FALSE(paper.ms_bias_correction);
  EXPECT_EQ(paper.dc_bound, 0.0f);
  EXPECT_EQ(paper.dc_tau0, 0.0f);
  EXPECT_NE(describe(paper).find("dc-tau0 off"), std::string::npos) << describe(paper);
  EXPECT_NE(message({"--dc-tau0", "0.5"}).find("--dc-tau0: '0.5' is not a staleness of at least 1 or off"),
            std::string::npos);
  EXPECT_TRUE(paper.skip_pulls);
  EXPECT_NE(describe(paper).find("dc-bound off"), std::string::npos) << describe(paper);
  EXPECT_NE(describe(paper).find("skip-pulls on"), std::string::npos) << describe(paper);
  EXPECT_NE(message({"--dc-bound", "0"}).find("--dc-bound: '0' is not a positive bound or off"), std::string::npos);
  EXPECT_NE(message({"--dc-bound", "-1"}).find("--dc-bound"), std::string::npos);
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
  h.rule.ms_bias_correction = 1;
  auto bytes = encode(h);
  Hello back = decode_hello(bytes, "peer-7");
  EXPECT_EQ(back.worker, 3u);
  EXPECT_EQ(back.rule.ms_bias_correction, 1u);
  EXPECT_EQ(back.rule.difference(Hello{}.rule), "ms-bias-correction on vs off");
  Hello bounded = h;
  bounded.rule.dc_bound = 0.5f;
  EXPECT_EQ(decode_hello(encode(bounded), "peer-7").rule.difference(h.rule), "dc-bound 0.5 vs 0");
  bounded.rule.dc_bound = NAN;
  EXPECT_THROW(decode_hello(encode(bounded), "peer-7"), Error);
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
  Hello odd = h;
  odd.rule.ms_bias_correction = 2;
  EXPECT_THROW(decode_hello(encode(odd), "peer-7"), Error);
}

}  // namespace
}  // namespace rdmaps::ps

namespace rdmaps::test {
namespace {

transport::MemorySupport ucx_of(unsigned major, unsigned minor, bool cuda) {
  return transport::ucx::judge_memory_support(
      major, minor, 0, cuda ? std::vector<std::string>{"host", "cuda"} : std::vector<std::string>{"host"});
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
    ASSERT_EQ(static_cast<double>(math::from_bf16(math::to_bf16(x))), bf16_reference(x)) << "x = " << x;
    ++checked;
  }
  EXPECT_GT(checked, 100000);
  EXPECT_TRUE(std::isnan(math::from_bf16(math::to_bf16(std::nanf("")))));
  EXPECT_EQ(math::from_bf16(math::to_bf16(1.0f + 1.0f / 256)), 1.0f);              // tie: to even
  EXPECT_EQ(math::from_bf16(math::to_bf16(1.0f + 3.0f / 256)), 1.0f + 1.0f / 64);  // tie: up to even
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
    math::compress_bf16(g.data(), residual.data(), out.data(), n);
    for (size_t i = 0; i < n; ++i) {
      sent[i] += math::from_bf16(out[i]);
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
  EXPECT_NE(why.find("device pointers go to UCX"), std::string::npos) << why;
}

// The live context answers for its own configuration: shm and tcp contexts
// here move host memory, as the probe of the same configuration says.
TEST(Capabilities, LiveContextAnswersWhatItMoves) {
  for (auto kind : {transport::TransportKind::kShm, transport::TransportKind::kTcp}) {
    transport::ContextOptions o;
    o.transport = kind;
    auto context = transport::create_context(o);
    const transport::MemorySupport live = context->memory_support(), probed = transport::probe_memory_support(o);
    EXPECT_TRUE(live.error.empty()) << live.error;
    EXPECT_EQ(live.memory_types, probed.memory_types) << transport::transport_name(kind);
    EXPECT_EQ(live.device_memory, probed.device_memory);
    EXPECT_EQ(live.backend, "UCX");
    ASSERT_FALSE(live.memory_types.empty());
    EXPECT_EQ(live.memory_types[0], "host");
  }
}

TEST(Capabilities, ProbeOfThisMachineIsConsistent) {
  Capabilities caps = probe_capabilities();
  EXPECT_TRUE(caps.transport.error.empty()) << caps.transport.error;
  ASSERT_FALSE(caps.transport.memory_types.empty());
  EXPECT_EQ(caps.transport.memory_types[0], "host");
  EXPECT_EQ(caps.gpu_path, choose_gpu_path(caps.transport, caps.gpu.device_count(), nullptr));
  EXPECT_NE(describe(caps).find("GPU path: "), std::string::npos);
  EXPECT_EQ(to_json(caps).front(), '{');
}

}  // namespace
}  // namespace rdmaps::test
