#include "src/update_rules.h"

#include <Eigen/Core>
#include <cmath>

namespace rdmaps::ps {

using Array = Eigen::Map<Eigen::ArrayXf>;
using ConstArray = Eigen::Map<const Eigen::ArrayXf>;

UpdateParams UpdateParams::from(const Config& c) {
  UpdateParams p;
  p.rule = c.rule;
  p.momentum = c.momentum;
  p.lambda = c.dc_lambda;
  p.lambda0 = c.dc_lambda0;
  p.ms_momentum = c.ms_momentum;
  p.eps = c.eps;
  p.ms_bias_correction = c.ms_bias_correction;
  return p;
}

Step step_for(const UpdateParams& p, float lr, uint64_t t) {
  Step s;
  s.lr = lr;
  if (p.rule == UpdateRule::kDcAsgdAdaptive && p.ms_bias_correction && p.ms_momentum < 1)
    s.ms_scale = static_cast<float>(1.0 / -std::expm1(static_cast<double>(t) * std::log(p.ms_momentum)));
  return s;
}

void apply_update(const UpdateParams& p, Step s, float* w_ptr, const float* g_ptr, const float* bak_ptr,
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
      w -= lr * (g + p.lambda * g * g * (w - bak));
      return;
    }
    case UpdateRule::kDcAsgdAdaptive: {
      ConstArray bak(bak_ptr, len);
      Array ms(state_ptr, len);
      ms = p.ms_momentum * ms + (1.0f - p.ms_momentum) * g * g;
      w -= lr * (g + (p.lambda0 / (s.ms_scale * ms + p.eps).sqrt()) * g * g * (w - bak));
      return;
    }
  }
}

}  // namespace rdmaps::ps
