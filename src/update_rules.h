// Server-side update rules, each one streaming pass over the shard's memory
// (DESIGN.md "Update rules"; DC-ASGD: Zheng et al., ICML 2017).
#pragma once

#include <cstddef>

#include "rdmaps/config.h"

namespace rdmaps::ps {

struct UpdateParams {
  UpdateRule rule = UpdateRule::kSgd;
  float momentum = 0.9f;
  float lambda = 0.04f;
  float lambda0 = 2.0f;
  float ms_momentum = 0.95f;
  float eps = 1e-7f;
  static UpdateParams from(const Config& config);
};

/// Whether the rule keeps per-element optimizer state (momentum, mean square).
bool needs_state(UpdateRule rule);
/// Whether the rule reads the worker's backup copy w_bak.
bool needs_backup(UpdateRule rule);

/// w <- rule(w, g, w_bak, state) over n floats with step size `lr`.
/// `w_bak` is read only by DC rules, `state` only by momentum and DC-ASGD-a.
void apply_update(const UpdateParams& p, float lr, float* w, const float* g, const float* w_bak, float* state,
                  size_t n);

}  // namespace rdmaps::ps
