// Timestamps for per-operation latency samples.
#pragma once

#include <cstdint>

namespace rdmaps::bench {

// The CPU's time-stamp counter where it is invariant (about 12 ns a read on the
// dev VM, against 28 ns for clock_gettime on kvm-clock, which at a 75 ns
// half round trip is a visible share of every sample), else steady_clock.
// ucx_perftest times its samples from the TSC as well (ucs_get_time).
class SampleClock {
 public:
  SampleClock();  // calibrates the counter against steady_clock (about 20 ms)
  uint64_t now() const;
  double to_us(uint64_t ticks) const { return static_cast<double>(ticks) * us_per_tick_; }
  bool uses_tsc() const { return tsc_; }

 private:
  bool tsc_ = false;
  double us_per_tick_ = 1e-3;  // steady_clock ticks are nanoseconds
};

}  // namespace rdmaps::bench
