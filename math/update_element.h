// One element of each update rule, shared by the CUDA kernel and host code so
// that the CPU tests check the kernel's arithmetic. The CPU server applies the
// same formulas vectorised with Eigen (src/ps/update_rules.cc): a loop over this
// function runs DC-ASGD-a 5x slower on the CPU (sqrtf and fminf keep GCC from
// vectorizing it; bench/apply_formulas.cc, docs/benchmarks.md), so both stay,
// each checked against one float64 reference.
#pragma once

#include <cmath>

#include "math/host_device.h"
#include "math/update_params.h"

namespace rdmaps::math {

/// Returns the updated w; `state` (momentum or mean square) is updated in place.
template <UpdateRule kRule>
RDMAPS_HOST_DEVICE inline float update_element(const UpdateParams& p, Step s, float w, float g, float bak,
                                               float& state) {
  if constexpr (kRule == UpdateRule::kSgd) {
    return w - s.lr * g;
  } else if constexpr (kRule == UpdateRule::kMomentum) {
    state = p.momentum * state + g;
    return w - s.lr * state;
  } else if constexpr (kRule == UpdateRule::kDcAsgdConstant) {
    return w - s.lr * (g + p.lambda * g * (g * (w - bak)));  // g * g alone may overflow where w - bak is 0
  } else {
    // The paper's g + lambda0 / sqrt(ms) * g * g * (w - bak), as g * (1 + k);
    // dc_bound keeps k in [-dc_bound, dc_bound].
    state = p.ms_momentum * state + (1.0f - p.ms_momentum) * g * g;
    const float k = p.lambda0 * g * (w - bak) / sqrtf(s.ms_scale * state + p.eps);
    if (p.dc_bound > 0) return w - s.lr * g * (1.0f + fminf(fmaxf(k, -p.dc_bound), p.dc_bound));
    return w - s.lr * (g + k * g);
  }
}

}  // namespace rdmaps::math
