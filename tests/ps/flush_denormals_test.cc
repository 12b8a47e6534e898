// The apply threads' float mode: subnormals read as zero while the guard lives.
#include "src/ps/flush_denormals.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "rdmaps/config.h"
#include "src/ps/update_rules.h"

namespace rdmaps::ps {
namespace {

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

}  // namespace
}  // namespace rdmaps::ps
