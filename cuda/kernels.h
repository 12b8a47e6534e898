// GPU kernels of the data path: the fused server update (one pass over w, g,
// w_bak and the DC-ASGD-a mean square, optionally reading a bf16 gradient) and
// bf16 gradient compression with error feedback for GPU workers. Pointers are
// device memory; work is queued on `stream` (a cudaStream_t; nullptr = the
// default stream) and launch errors throw. A CPU build throws kUnsupported.
#pragma once

#include <cstddef>
#include <cstdint>

#include "math/update_params.h"

namespace rdmaps::cuda {

/// Throws Error(kUnsupported) when the current GPU cannot run this build's
/// kernels (its architecture is older than the oldest built, and PTX does
/// not compile down), naming the GPU's sm_XY and the built ones: at startup,
/// not at the first push of a running job.
void require_kernels_run_here();
/// w -= lr * rule(g, w, bak, state): the formulas of math/update_element.h.
void update(const math::UpdateParams& p, math::Step s, float* w, const float* g, const float* bak, float* state,
            size_t n, void* stream = nullptr);
/// update() with the gradient read as bf16 and widened in the same pass.
void update_bf16(const math::UpdateParams& p, math::Step s, float* w, const uint16_t* g, const float* bak, float* state,
                 size_t n, void* stream = nullptr);
/// out = bf16(g + residual); residual keeps what bf16 could not carry.
void compress_bf16(const float* g, float* residual, uint16_t* out, size_t n, void* stream = nullptr);
void decompress_bf16(const uint16_t* in, float* out, size_t n, void* stream = nullptr);

}  // namespace rdmaps::cuda
