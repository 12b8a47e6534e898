// The latency samples' clock agrees with steady_clock over the same interval.
#include "bench/sample_clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace rdmaps::bench {
namespace {

TEST(SampleClock, MeasuresAnIntervalAsSteadyClockDoes) {
  const SampleClock clock;
  for (int ms : {5, 50}) {
    const auto s0 = std::chrono::steady_clock::now();
    const uint64_t t0 = clock.now();
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    const uint64_t t1 = clock.now();
    const auto s1 = std::chrono::steady_clock::now();
    const double steady_us = std::chrono::duration<double, std::micro>(s1 - s0).count();
    ASSERT_GE(t1, t0) << "the clock went backwards";
    const double us = clock.to_us(t1 - t0);
    // Within 2 % plus the two reads that steady_clock's interval brackets.
    EXPECT_NEAR(us, steady_us, 0.02 * steady_us + 5.0)
        << ms << " ms sleep; counter " << (clock.uses_tsc() ? "TSC" : "steady_clock");
    EXPECT_GE(us, ms * 1000.0 * 0.98) << "shorter than the sleep itself";
  }
}

}  // namespace
}  // namespace rdmaps::bench
