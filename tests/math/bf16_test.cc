// The bf16 codec: rounding against an independent reference, error feedback.
#include "math/bf16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
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

// A non-finite gradient (or one past bf16's range) is sent as it is, and the
// element's later pushes are what they would have been without it.
TEST(Bf16, ANonFiniteOrOverflowingValueIsSentOnceAndNotCarriedIntoLaterPushes) {
  const float bad[] = {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                       std::numeric_limits<float>::quiet_NaN(), 3.4e38f, -3.4e38f};
  for (float b : bad) {
    float residual = 0.25f;  // what earlier pushes left
    const uint16_t sent = math::encode_with_feedback(b, residual);
    const float as_sent = math::from_bf16(sent);
    if (std::isnan(b))
      EXPECT_TRUE(std::isnan(as_sent));
    else
      EXPECT_EQ(as_sent, std::copysign(std::numeric_limits<float>::infinity(), b)) << b;
    EXPECT_EQ(residual, 0.0f) << b;
    for (int step = 0; step < 3; ++step) EXPECT_EQ(math::from_bf16(math::encode_with_feedback(0.5f, residual)), 0.5f);
    EXPECT_EQ(residual, 0.0f);
  }
  // The largest finite float bf16 holds stays finite, its residual too.
  float residual = 0;
  EXPECT_TRUE(std::isfinite(math::from_bf16(math::encode_with_feedback(3.38e38f, residual))));
  EXPECT_TRUE(std::isfinite(residual));
}

}  // namespace
}  // namespace rdmaps::test
