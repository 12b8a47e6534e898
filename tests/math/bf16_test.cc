// The bf16 codec: rounding against an independent reference, error feedback.
#include "math/bf16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace rdmaps::test {
namespace {

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

}  // namespace
}  // namespace rdmaps::test
