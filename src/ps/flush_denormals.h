// Subnormal floats (below 1.2e-38) cost a microcode assist of about a hundred
// cycles per operation on x86, and DC-ASGD-a's mean square decays into them
// wherever gradients are rare (the border pixels of an image, say): one such
// pass ran 4.5x slower than DC-ASGD-c on the same updates. Threads that apply
// updates therefore read subnormal inputs as zero and flush subnormal results
// to zero (MXCSR DAZ+FTZ on x86, FPCR.FZ on aarch64), for as long as this
// guard lives; the thread's previous mode comes back after.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif
#include <cstdint>

namespace rdmaps::ps {

class FlushDenormals {
 public:
  FlushDenormals() {
#if defined(__x86_64__) || defined(__i386__)
    saved_ = _mm_getcsr();
    _mm_setcsr(static_cast<unsigned>(saved_) | kFtz | kDaz);
#elif defined(__aarch64__)
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved_));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_ | kFz));
#endif
  }
  ~FlushDenormals() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr(static_cast<unsigned>(saved_));
#elif defined(__aarch64__)
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_));
#endif
  }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  static constexpr uint64_t kFtz = 1u << 15, kDaz = 1u << 6;  // MXCSR
  static constexpr uint64_t kFz = uint64_t{1} << 24;          // FPCR
  uint64_t saved_ = 0;
};

}  // namespace rdmaps::ps
