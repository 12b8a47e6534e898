// What an update rule is given: its parameters (from the job's Config) and
// what changes from one push to the next. Host and device code share them
// (math/update_element.h holds the formulas, docs/architecture.md "Update
// rules" states them).
#pragma once

#include "math/host_device.h"
#include "rdmaps/config.h"

namespace rdmaps::math {

struct UpdateParams {
  UpdateRule rule = UpdateRule::kSgd;
  float momentum = 0.9f;
  float lambda = 0.04f;
  float lambda0 = 2.0f;
  float ms_momentum = 0.95f;
  float eps = 1e-7f;
  bool ms_bias_correction = false;
  float dc_bound = 0;  ///< DC-ASGD-a: compensation factor clamped to [-dc_bound, dc_bound]; 0: unbounded
  float dc_tau0 = 0;   ///< DC-ASGD-a: pushes tau > dc_tau0 stale step lr * dc_tau0 / tau; 0: off
};

/// What changes from one push to the next.
struct Step {
  float lr = 0;
  /// DC-ASGD-a reads the mean square as ms * ms_scale: 1, or with ms_bias_correction
  /// 1 / (1 - ms_momentum^t) at the shard's t-th update (Adam's bias correction, Kingma &
  /// Ba 2015). Uncorrected, the first updates divide by a mean square that starts at zero;
  /// with 8 workers that made the compensation blow up within ten steps at lambda0 4 and 8.
  float ms_scale = 1;
};

/// Whether the rule keeps per-element optimizer state (momentum, mean square).
RDMAPS_HOST_DEVICE constexpr bool needs_state(UpdateRule rule) {
  return rule == UpdateRule::kMomentum || rule == UpdateRule::kDcAsgdAdaptive;
}
/// Whether the rule reads the worker's backup copy w_bak.
RDMAPS_HOST_DEVICE constexpr bool needs_backup(UpdateRule rule) {
  return rule == UpdateRule::kDcAsgdConstant || rule == UpdateRule::kDcAsgdAdaptive;
}

}  // namespace rdmaps::math
