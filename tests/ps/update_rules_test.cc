// The update rules against a float64 evaluation of docs/architecture.md's
// formulas: the Eigen CPU pass and the element function the CUDA kernel runs.
#include "src/ps/update_rules.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "math/update_element.h"
#include "rdmaps/config.h"
#include "tests/common/update_reference.h"

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

// A gradient whose square overflows is the formula's, not NaN: DC-ASGD-c
// where w = bak (0 * Inf), and DC-ASGD-a whose mean square became +Inf (its
// sqrt is +Inf, so k is 0: Eigen's fast sqrt gave NaN there, and the element
// stayed NaN for good). The CPU pass and the kernel's element function agree.
TEST(UpdateRules, AGradientWhoseSquareOverflowsLeavesNoNaN) {
  const float inf = std::numeric_limits<float>::infinity();
  for (UpdateRule rule : {UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    SCOPED_TRACE(rule_name(rule));
    math::UpdateParams p;
    p.rule = rule;
    p.ms_bias_correction = true;
    const size_t n = 9;  // a vector's width and a tail
    std::vector<float> w(n, 1.0f), bak(n, 1.0f), g(n, 1e20f), state(n, 0.0f);
    const math::Step step = step_for(p, 0.1f, 1);
    apply_update(p, step, w.data(), g.data(), bak.data(), state.data(), n);
    for (size_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(w[i], 1.0f - 1e19f) << i;
    // Then ordinary gradients, on a copy that moved: finite, and as the element function has them.
    std::fill(g.begin(), g.end(), 0.5f);
    std::fill(bak.begin(), bak.end(), 0.0f);
    std::vector<float> w_el = w, state_el = state;
    apply_update(p, step_for(p, 0.1f, 2), w.data(), g.data(), bak.data(), state.data(), n);
    for (size_t i = 0; i < n; ++i) {
      w_el[i] = element(p, step_for(p, 0.1f, 2), w_el[i], g[i], bak[i], state_el[i]);
      EXPECT_TRUE(std::isfinite(w[i])) << i << ": " << w[i];
      EXPECT_EQ(w[i], w_el[i]) << i;
    }
    if (rule == UpdateRule::kDcAsgdAdaptive) {
      EXPECT_EQ(state[0], inf) << "the mean square overflowed, as set up";
    }
  }
}

// A compensation of Inf / Inf (a gradient and a drift whose product
// overflows, over a mean square that did) is NaN. Bounded, the kernel's
// fmaxf/fminf clamp it into [-b, b] (to -b); the CPU pass clamps it alike
// (Eigen's max let the NaN through, and the element became NaN for good).
TEST(UpdateRules, ABoundedCompensationOfInfOverInfIsClampedAsTheKernelDoes) {
  const float inf = std::numeric_limits<float>::infinity();
  math::UpdateParams p;
  p.rule = UpdateRule::kDcAsgdAdaptive;
  p.dc_bound = 1.0f;
  const size_t n = 9;  // a vector's width and a tail
  std::vector<float> w(n, 1e19f), bak(n, 0.0f), g(n, 1e20f), state(n, inf);
  std::vector<float> w_el = w, state_el = state;
  const math::Step step = step_for(p, 0.1f, 1);
  apply_update(p, step, w.data(), g.data(), bak.data(), state.data(), n);
  for (size_t i = 0; i < n; ++i) {
    w_el[i] = element(p, step, w_el[i], g[i], bak[i], state_el[i]);
    EXPECT_EQ(w_el[i], 1e19f) << i << ": the kernel's clamp took k to -1, a factor of 0";
    EXPECT_EQ(w[i], w_el[i]) << i;
  }
}

}  // namespace
}  // namespace rdmaps::ps
