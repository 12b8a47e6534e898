// The update rules of docs/architecture.md in double precision: the reference that the CPU
// rules, the shared element function (the CUDA kernel's arithmetic), the GPU
// kernel and the server end to end are all checked against.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "src/ps/update_rules.h"

namespace rdmaps::test {

/// 1 / (1 - beta^t): DC-ASGD-a's mean-square bias correction at the t-th update.
inline double reference_ms_scale(double beta, uint64_t t) { return 1.0 / (1.0 - std::pow(beta, double(t))); }

/// One element of one update; `state` (momentum or mean square) is updated in place.
inline double reference_update(const math::UpdateParams& p, double lr, double ms_scale, double w, double g, double bak,
                               double& state) {
  switch (p.rule) {
    case UpdateRule::kSgd:
      return w - lr * g;
    case UpdateRule::kMomentum:
      state = double(p.momentum) * state + g;
      return w - lr * state;
    case UpdateRule::kDcAsgdConstant:
    case UpdateRule::kDcAsgdAdaptive: {
      // The paper's compensation lambda * g * g * (w - bak), as a factor k of g.
      double lambda = p.lambda;
      if (p.rule == UpdateRule::kDcAsgdAdaptive) {
        state = double(p.ms_momentum) * state + (1 - double(p.ms_momentum)) * g * g;
        lambda = double(p.lambda0) / std::sqrt(ms_scale * state + double(p.eps));
      }
      double k = lambda * g * (w - bak);
      if (p.rule == UpdateRule::kDcAsgdAdaptive && p.dc_bound > 0)
        k = std::clamp(k, -double(p.dc_bound), double(p.dc_bound));
      return w - lr * (g + k * g);
    }
  }
  return NAN;
}

}  // namespace rdmaps::test
