#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda/kernels.h"
#include "cuda/status.h"
#include "math/bf16.h"
#include "math/update_element.h"
#include "rdmaps/error.h"
#include "rdmaps_config.h"

namespace rdmaps::cuda {
namespace {

constexpr int kThreads = 256;

void check_launch(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw Error(Errc::kInternal, std::string("CUDA kernel ") + what + ": " + cudaGetErrorString(err));
}

unsigned blocks_for(size_t n) {
  int device = 0, sms = 0;
  // Failures said here: left as the thread's last error, the next launch's
  // check named the kernel for them.
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess)
    throw Error(Errc::kInternal,
                std::string("CUDA: the multiprocessor count of the current device: ") + cudaGetErrorString(err));
  size_t wanted = (n + kThreads - 1) / kThreads;
  size_t cap = static_cast<size_t>(sms > 0 ? sms : 80) * 8;  // enough blocks in flight to saturate memory
  return static_cast<unsigned>(wanted < cap ? (wanted ? wanted : 1) : cap);
}

__device__ __forceinline__ float load(const float* g, size_t i) { return g[i]; }
__device__ __forceinline__ float load(const uint16_t* g, size_t i) { return math::from_bf16(g[i]); }

// One pass per element; the rule is a template argument, not a branch per element.
template <UpdateRule kRule, typename Grad>
__global__ void update_kernel(math::UpdateParams p, math::Step s, float* __restrict__ w, const Grad* __restrict__ g,
                              const float* __restrict__ bak, float* __restrict__ state, size_t n) {
  constexpr bool kState = math::needs_state(kRule), kBackup = math::needs_backup(kRule);
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    float st = kState ? state[i] : 0.0f;
    w[i] = math::update_element<kRule>(p, s, w[i], load(g, i), kBackup ? bak[i] : 0.0f, st);
    if constexpr (kState) state[i] = st;
  }
}

template <typename Grad>
void launch_update(const math::UpdateParams& p, math::Step st, float* w, const Grad* g, const float* bak, float* state,
                   size_t n, void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  unsigned blocks = blocks_for(n);
  switch (p.rule) {
    case UpdateRule::kSgd:
      update_kernel<UpdateRule::kSgd><<<blocks, kThreads, 0, s>>>(p, st, w, g, bak, state, n);
      break;
    case UpdateRule::kMomentum:
      update_kernel<UpdateRule::kMomentum><<<blocks, kThreads, 0, s>>>(p, st, w, g, bak, state, n);
      break;
    case UpdateRule::kDcAsgdConstant:
      update_kernel<UpdateRule::kDcAsgdConstant><<<blocks, kThreads, 0, s>>>(p, st, w, g, bak, state, n);
      break;
    case UpdateRule::kDcAsgdAdaptive:
      update_kernel<UpdateRule::kDcAsgdAdaptive><<<blocks, kThreads, 0, s>>>(p, st, w, g, bak, state, n);
      break;
  }
  check_launch("update");
}

__global__ void compress_kernel(const float* __restrict__ g, float* __restrict__ residual, uint16_t* __restrict__ out,
                                size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = math::encode_with_feedback(g[i], residual[i]);
}

__global__ void decompress_kernel(const uint16_t* __restrict__ in, float* __restrict__ out, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = math::from_bf16(in[i]);
}

// from_bf16 on the two codes of one 32-bit word (little endian: the low half
// is the first element).
__device__ __forceinline__ float2 widen_pair(uint32_t two) {
  return make_float2(__uint_as_float(two << 16), __uint_as_float(two & 0xffff0000u));
}

__device__ __forceinline__ void widen_group(const uint4& codes, float4* out) {
  const float2 a = widen_pair(codes.x), b = widen_pair(codes.y), c = widen_pair(codes.z), d = widen_pair(codes.w);
  out[0] = make_float4(a.x, a.y, b.x, b.y);
  out[1] = make_float4(c.x, c.y, d.x, d.y);
}

// Element by element, each thread moves 2 bytes in and 4 out per access: an
// H200 reached 0.62 of its device-to-device copy (docs/benchmarks.md). Here a
// thread takes groups of 8 codes, one 16-byte load and two 16-byte stores
// each, and issues both loads of two groups before storing, so enough bytes
// are in flight to fill the memory pipeline. Pointers must be 16-byte aligned
// (the caller checks); the n % 8 codes past the last group go to block 0.
__global__ void decompress_vec_kernel(const uint16_t* __restrict__ in, float* __restrict__ out, size_t n) {
  const size_t groups = n / 8;
  const uint4* in8 = reinterpret_cast<const uint4*>(in);
  float4* out8 = reinterpret_cast<float4*>(out);
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  for (; i + stride < groups; i += 2 * stride) {
    const uint4 first = in8[i], second = in8[i + stride];
    widen_group(first, out8 + 2 * i);
    widen_group(second, out8 + 2 * (i + stride));
  }
  if (i < groups) widen_group(in8[i], out8 + 2 * i);
  const size_t tail = groups * 8 + threadIdx.x;
  if (blockIdx.x == 0 && tail < n) out[tail] = math::from_bf16(in[tail]);
}

}  // namespace

void require_kernels_run_here() {
  cudaFuncAttributes attr{};
  const cudaError_t err = cudaFuncGetAttributes(&attr, compress_kernel);
  if (err == cudaSuccess) return;
  // Also the first call that makes the context: out of memory, a GPU another
  // process holds exclusively, are not the build's architectures.
  if (err != cudaErrorNoKernelImageForDevice && err != cudaErrorInvalidDeviceFunction)
    check(err, "the first use of the GPU (its context and this build's kernels)");
  cudaGetLastError();  // not the next launch's error
  int device = -1, major = 0, minor = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  cudaGetLastError();
  const std::string sm = std::to_string(major) + std::to_string(minor);
  throw Error(Errc::kUnsupported, "GPU " + std::to_string(device) + " (sm_" + sm +
                                      ") cannot run the kernels of this build, made for sm_{" RDMAPS_CUDA_ARCHS "}: " +
                                      cudaGetErrorString(err) + "; rebuild with -Dgpu_arch=" + sm +
                                      " (a CUDA that still builds it)");
}

void update(const math::UpdateParams& p, math::Step s, float* w, const float* g, const float* bak, float* state,
            size_t n, void* stream) {
  launch_update(p, s, w, g, bak, state, n, stream);
}

void update_bf16(const math::UpdateParams& p, math::Step s, float* w, const uint16_t* g, const float* bak, float* state,
                 size_t n, void* stream) {
  launch_update(p, s, w, g, bak, state, n, stream);
}

void compress_bf16(const float* g, float* residual, uint16_t* out, size_t n, void* stream) {
  if (n == 0) return;
  compress_kernel<<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(g, residual, out, n);
  check_launch("compress_bf16");
}

void decompress_bf16(const uint16_t* in, float* out, size_t n, void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  const bool aligned = reinterpret_cast<uintptr_t>(in) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (aligned && n >= 8)
    decompress_vec_kernel<<<blocks_for(n / 8), kThreads, 0, s>>>(in, out, n);
  else
    decompress_kernel<<<blocks_for(n), kThreads, 0, s>>>(in, out, n);
  check_launch("decompress_bf16");
}

}  // namespace rdmaps::cuda
