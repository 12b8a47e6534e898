// Server-side update rules, each one streaming pass over the shard's memory
// (docs/architecture.md "Update rules"; DC-ASGD: Zheng et al., ICML 2017).
#pragma once

#include <cstddef>
#include <cstdint>

#include "math/update_params.h"
#include "rdmaps/config.h"

namespace rdmaps::ps {

/// The rule's parameters as the job's configuration gives them.
math::UpdateParams update_params(const Config& config);

/// The step for a shard's `t`-th update (t >= 1) at learning rate `lr`, of a
/// gradient `tau` updates stale.
math::Step step_for(const math::UpdateParams& p, float lr, uint64_t t, uint64_t tau = 0);

/// w <- rule(w, g, w_bak, state) over n floats.
/// `w_bak` is read only by DC rules, `state` only by momentum and DC-ASGD-a.
void apply_update(const math::UpdateParams& p, math::Step s, float* w, const float* g, const float* w_bak, float* state,
                  size_t n);

/// Floats of a bf16 gradient widened at a time: 16 KiB, in L1 for its apply.
inline constexpr size_t kWidenFloats = 4096;
/// apply_update() of a bf16 gradient, widened into `scratch` (kWidenFloats
/// floats) a block at a time and applied at once: widened whole first, a
/// 1 MiB piece was written and read back beside the apply's own pass. The
/// rules work element by element: the same bits either way.
void apply_update_bf16(const math::UpdateParams& p, math::Step s, float* w, const uint16_t* g, const float* w_bak,
                       float* state, size_t n, float* scratch);

}  // namespace rdmaps::ps
