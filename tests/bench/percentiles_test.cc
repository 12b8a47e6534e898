// The percentiles rdmaps-perf reports (bench/perf_report.h).
#include <gtest/gtest.h>

#include <vector>

#include "bench/perf_report.h"

namespace rdmaps::bench {
namespace {

// Nearest rank: p99 of 100 samples is the 99th, not the largest (floor(q*n)
// took the 100th); p50 of 20 is the 10th.
TEST(Percentiles, AreTheNearestRankSamples) {
  std::vector<double> hundred(100);
  for (size_t i = 0; i < hundred.size(); ++i) hundred[i] = static_cast<double>(100 - i);  // any order
  const Percentiles p = Percentiles::of(hundred);
  EXPECT_EQ(p.p50, 50);
  EXPECT_EQ(p.p99, 99);
  EXPECT_EQ(p.max, 100);
  std::vector<double> twenty(20);
  for (size_t i = 0; i < twenty.size(); ++i) twenty[i] = static_cast<double>(i + 1);
  EXPECT_EQ(Percentiles::of(twenty).p50, 10);
  EXPECT_EQ(Percentiles::of({7}).p99, 7);
}

}  // namespace
}  // namespace rdmaps::bench
