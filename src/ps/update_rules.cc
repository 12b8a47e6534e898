#include "src/ps/update_rules.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>

#include "math/bf16.h"
#include "src/ps/protocol.h"

namespace rdmaps::ps {

using Array = Eigen::Map<Eigen::ArrayXf>;
using ConstArray = Eigen::Map<const Eigen::ArrayXf>;

// Through the protocol's one list of the rule's fields, so that a new
// parameter is added in one place.
math::UpdateParams update_params(const Config& c) { return RuleParams::from(c).update_params(); }

math::Step step_for(const math::UpdateParams& p, float lr, uint64_t t, uint64_t tau) {
  math::Step s;
  s.lr = lr;
  if (p.rule != UpdateRule::kDcAsgdAdaptive) return s;
  if (p.ms_bias_correction && p.ms_momentum < 1)
    s.ms_scale = static_cast<float>(1.0 / -std::expm1(static_cast<double>(t) * std::log(p.ms_momentum)));
  // With a fixed delay tau, SGD stays stable only while lr shrinks like 1/tau;
  // the compensation does not recover that (docs/architecture.md "Update rules").
  if (p.dc_tau0 > 0 && static_cast<double>(tau) > p.dc_tau0)
    s.lr = static_cast<float>(lr * (p.dc_tau0 / static_cast<double>(tau)));
  return s;
}

void apply_update(const math::UpdateParams& p, math::Step s, float* w_ptr, const float* g_ptr, const float* bak_ptr,
                  float* state_ptr, size_t n) {
  const float lr = s.lr;
  const auto len = static_cast<Eigen::Index>(n);
  Array w(w_ptr, len);
  ConstArray g(g_ptr, len);
  switch (p.rule) {
    case UpdateRule::kSgd:
      w -= lr * g;
      return;
    case UpdateRule::kMomentum: {
      Array v(state_ptr, len);
      v = p.momentum * v + g;
      w -= lr * v;
      return;
    }
    case UpdateRule::kDcAsgdConstant: {
      ConstArray bak(bak_ptr, len);
      w -= lr * (g + p.lambda * g * (g * (w - bak)));  // g * g alone may overflow where w - bak is 0
      return;
    }
    case UpdateRule::kDcAsgdAdaptive: {
      ConstArray bak(bak_ptr, len);
      Array ms(state_ptr, len);
      ms = p.ms_momentum * ms + (1.0f - p.ms_momentum) * g * g;
      // The compensation scales each element's gradient by 1 + k (update_element.h);
      // bounded, k stays in [-b, b]. A NaN k (Inf / Inf) becomes -b, as the
      // kernel's fmaxf has it (UpdateRules.ABoundedCompensation...).
      const auto k = p.lambda0 * g * (w - bak) / (s.ms_scale * ms + p.eps).sqrt();
      if (p.dc_bound > 0) {
        const auto lowest = Eigen::ArrayXf::Constant(len, -p.dc_bound);
#if defined(__x86_64__) || defined(__i386__)
        // SSE and AVX max keep the left operand where one is NaN, as std::max
        // does (k.max(-b) kept the NaN), at no cost; Eigen's NaN policies
        // cost about 5 % of this pass here.
        w -= lr * g * (1.0f + lowest.max(k).min(p.dc_bound));
#else
        // NEON's max propagates a NaN (it stayed in w for good): the policy that takes the number.
        w -= lr * g *
             (1.0f + lowest.binaryExpr(k, Eigen::internal::scalar_max_op<float, float, Eigen::PropagateNumbers>())
                         .min(p.dc_bound));
#endif
      } else {
        w -= lr * (g + k * g);
      }
      return;
    }
  }
}

void apply_update_bf16(const math::UpdateParams& p, math::Step s, float* w, const uint16_t* g, const float* w_bak,
                       float* state, size_t n, float* scratch) {
  for (size_t at = 0; at < n; at += kWidenFloats) {
    const size_t m = std::min(kWidenFloats, n - at);
    math::decompress_bf16(g + at, scratch, m);
    apply_update(p, s, w + at, scratch, w_bak ? w_bak + at : nullptr, state ? state + at : nullptr, m);
  }
}

}  // namespace rdmaps::ps
