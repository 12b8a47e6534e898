#include "bench/sample_clock.h"

#include <chrono>
#include <cstdint>
#include <thread>

#if defined(__x86_64__)
#include <cpuid.h>
#include <x86intrin.h>
#endif

namespace rdmaps::bench {
namespace {

using Steady = std::chrono::steady_clock;

uint64_t steady_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Steady::now().time_since_epoch()).count());
}

#if defined(__x86_64__)
struct Reading {
  uint64_t ns, tsc;
};

// The steady_clock read bracketed by two counter reads, best of five: a
// preemption between the two clocks would skew the calibration.
Reading read_both() {
  Reading best{};
  uint64_t narrowest = UINT64_MAX;
  for (int i = 0; i < 5; ++i) {
    const uint64_t before = __rdtsc(), ns = steady_ns(), after = __rdtsc();
    if (after >= before && after - before < narrowest) {
      narrowest = after - before;
      best = {ns, before + (after - before) / 2};
    }
  }
  return best;
}
#endif

bool invariant_tsc() {
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0x80000007, &eax, &ebx, &ecx, &edx)) return false;
  return (edx & (1u << 8)) != 0;  // CPUID.80000007H:EDX[8]: the TSC runs at a constant rate in every state
#else
  return false;
#endif
}

}  // namespace

SampleClock::SampleClock() : tsc_(invariant_tsc()) {
#if defined(__x86_64__)
  if (!tsc_) return;
  const Reading start = read_both();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const Reading end = read_both();
  if (end.tsc <= start.tsc || end.ns <= start.ns) {
    tsc_ = false;
    return;
  }
  us_per_tick_ = static_cast<double>(end.ns - start.ns) / 1e3 / static_cast<double>(end.tsc - start.tsc);
#endif
}

uint64_t SampleClock::now() const {
#if defined(__x86_64__)
  if (tsc_) return __rdtsc();
#endif
  return steady_ns();
}

}  // namespace rdmaps::bench
