// The CPU apply has two sources of its formulas: the Eigen pass the server
// runs (src/ps/update_rules.cc) and the per-element function the CUDA kernel runs
// (math/update_element.h). This measures both, built alike, on the same
// inputs, so the choice to keep two is a measured one (docs/benchmarks.md),
// and a pass of the same memory traffic in the same run: the bound.
//   apply-formulas [FLOATS (16M)] [REPEATS (10)]
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "math/update_element.h"
#include "src/ps/update_rules.h"

namespace {

using namespace rdmaps;
using Clock = std::chrono::steady_clock;

template <UpdateRule kRule>
void apply_elements(const math::UpdateParams& p, math::Step s, float* w, const float* g, const float* bak, float* state,
                    size_t n) {
  for (size_t i = 0; i < n; ++i) {
    float st = math::needs_state(kRule) ? state[i] : 0.0f;
    w[i] = math::update_element<kRule>(p, s, w[i], g[i], math::needs_backup(kRule) ? bak[i] : 0.0f, st);
    if (math::needs_state(kRule)) state[i] = st;
  }
}

void apply_elements(const math::UpdateParams& p, math::Step s, float* w, const float* g, const float* bak, float* state,
                    size_t n) {
  switch (p.rule) {
    case UpdateRule::kSgd:
      return apply_elements<UpdateRule::kSgd>(p, s, w, g, bak, state, n);
    case UpdateRule::kMomentum:
      return apply_elements<UpdateRule::kMomentum>(p, s, w, g, bak, state, n);
    case UpdateRule::kDcAsgdConstant:
      return apply_elements<UpdateRule::kDcAsgdConstant>(p, s, w, g, bak, state, n);
    case UpdateRule::kDcAsgdAdaptive:
      return apply_elements<UpdateRule::kDcAsgdAdaptive>(p, s, w, g, bak, state, n);
  }
}

// The bound: the same arrays read and written as the rule's pass (w, g, bak,
// state as it uses them), with an addition in place of the formula, in one
// loop the compiler vectorizes (at -O3 and with no aliasing, as Eigen's own
// passes are): what the memory allows this pass on one thread.
__attribute__((optimize("O3"))) void same_traffic(UpdateRule rule, float* __restrict w, const float* __restrict g,
                                                  const float* __restrict bak, float* __restrict state, size_t n) {
  switch (rule) {
    case UpdateRule::kSgd:
      for (size_t i = 0; i < n; ++i) w[i] += g[i];
      return;
    case UpdateRule::kMomentum:
      for (size_t i = 0; i < n; ++i) {
        state[i] += g[i];
        w[i] += state[i];
      }
      return;
    case UpdateRule::kDcAsgdConstant:
      for (size_t i = 0; i < n; ++i) w[i] += g[i] + bak[i];
      return;
    case UpdateRule::kDcAsgdAdaptive:
      for (size_t i = 0; i < n; ++i) {
        state[i] += g[i];
        w[i] += g[i] + bak[i] + state[i];
      }
      return;
  }
}

}  // namespace

// A whole decimal number in [1, max], or 0 ("16M" read as 16 ran a cache-sized pass and said nothing).
uint64_t count_arg(const char* text, uint64_t max) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (!*text || *end || errno || text[0] == '-' || v < 1 || v > max) return 0;
  return v;
}

int main(int argc, char** argv) {
  const uint64_t n = argc > 1 ? count_arg(argv[1], uint64_t{1} << 32) : (16u << 20);
  const uint64_t repeats = argc > 2 ? count_arg(argv[2], 1000000) : 10;
  if (n == 0 || repeats == 0 || argc > 3) {
    std::fprintf(stderr,
                 "apply-formulas: usage: apply-formulas [FLOATS] [REPEATS]: FLOATS a whole number of floats, 1 to "
                 "2^32 (16777216, not 16M), REPEATS 1 to 10^6\n");
    return 2;
  }
  std::printf("# %llu floats, best of %llu passes per formula\n", static_cast<unsigned long long>(n),
              static_cast<unsigned long long>(repeats));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> w0(n), g(n), bak(n), st0(n);
  for (size_t i = 0; i < n; ++i) {
    w0[i] = d(rng);
    g[i] = d(rng) * 1e-2f;
    bak[i] = w0[i] + d(rng) * 1e-3f;
    st0[i] = std::fabs(d(rng)) * 1e-4f;
  }
  std::printf("%-10s %12s %12s %8s %14s %12s %12s\n", "rule", "eigen GB/s", "element GB/s", "ratio", "max |diff|",
              "bound GB/s", "eigen/bound");
  for (UpdateRule rule :
       {UpdateRule::kSgd, UpdateRule::kMomentum, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    math::UpdateParams p;
    p.rule = rule;
    p.lambda0 = 32;
    p.dc_bound = 1;
    p.ms_bias_correction = true;
    const math::Step s = ps::step_for(p, 0.1f, 7);
    // Bytes the pass must move: read w, g (+bak) (+state), write w (+state).
    const double bytes = 4.0 * n * (3 + (math::needs_backup(rule) ? 1 : 0) + (math::needs_state(rule) ? 2 : 0));
    std::vector<float> w_e = w0, st_e = st0, w_l = w0, st_l = st0, w_b = w0, st_b = st0;
    double best_e = 1e30, best_l = 1e30, best_b = 1e30;
    for (uint64_t r = 0; r < repeats; ++r) {  // interleaved, so drift hits all alike
      auto t0 = Clock::now();
      ps::apply_update(p, s, w_e.data(), g.data(), bak.data(), st_e.data(), n);
      auto t1 = Clock::now();
      apply_elements(p, s, w_l.data(), g.data(), bak.data(), st_l.data(), n);
      auto t2 = Clock::now();
      same_traffic(rule, w_b.data(), g.data(), bak.data(), st_b.data(), n);
      auto t3 = Clock::now();
      best_e = std::min(best_e, std::chrono::duration<double>(t1 - t0).count());
      best_l = std::min(best_l, std::chrono::duration<double>(t2 - t1).count());
      best_b = std::min(best_b, std::chrono::duration<double>(t3 - t2).count());
    }
    double diff = 0;
    for (size_t i = 0; i < n; ++i) diff = std::max(diff, static_cast<double>(std::fabs(w_e[i] - w_l[i])));
    std::printf("%-10s %12.2f %12.2f %8.2f %14.3g %12.2f %12.2f\n", rule_name(rule), bytes / best_e / 1e9,
                bytes / best_l / 1e9, best_e / best_l, diff, bytes / best_b / 1e9, best_e / best_b);
  }
  return 0;
}
