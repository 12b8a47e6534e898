// bfloat16 as the gradient wire format: the upper half of a float32, rounded
// to nearest even. Pushes in bf16 move half the bytes; the worker keeps the
// rounding error and adds it to its next gradient (error feedback), so no
// gradient mass is lost over time. Host and device code share these functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "math/host_device.h"

namespace rdmaps::math {

RDMAPS_HOST_DEVICE inline uint16_t to_bf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                                       // nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}

RDMAPS_HOST_DEVICE inline float from_bf16(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

/// One element with error feedback: returns bf16(g + residual) and leaves in
/// `residual` what bf16 could not carry.
RDMAPS_HOST_DEVICE inline uint16_t encode_with_feedback(float g, float& residual) {
  float v = g + residual;
  uint16_t b = to_bf16(v);
  const float r = v - from_bf16(b);
  // A NaN, or a value that rounds to +-Inf, goes as it is and is not carried:
  // a non-finite residual would spoil every later push of the element.
  residual = r - r == 0.0f ? r : 0.0f;
  return b;
}

/// out = bf16(g + residual); residual = (g + residual) - out.
inline void compress_bf16(const float* g, float* residual, uint16_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = encode_with_feedback(g[i], residual[i]);
}

inline void decompress_bf16(const uint16_t* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = from_bf16(in[i]);
}

}  // namespace rdmaps::math
