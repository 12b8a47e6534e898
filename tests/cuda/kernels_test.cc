// GPU kernels against float64 CPU references, on fresh random inputs with
// outputs poisoned before each run. Skips, saying why, where no GPU is.
#include "cuda/kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_memory.h"
#include "cuda/gpu_probe.h"
#include "math/bf16.h"
#include "rdmaps/error.h"
#include "tests/common/update_reference.h"

namespace rdmaps::test {
namespace {

class GpuTest : public testing::Test {
 protected:
  void SetUp() override {
    cuda::GpuInfo info = cuda::probe_gpus();
    if (info.device_count() == 0) GTEST_SKIP() << "no CUDA device: " << info.reason;
  }
  std::mt19937 rng_{std::random_device{}()};
  std::vector<float> random(size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng_);
    return v;
  }
};

constexpr size_t kN = (1u << 20) + 37;  // not a multiple of any block size

struct DeviceVector {
  explicit DeviceVector(const std::vector<float>& v) : buf(v.size() * 4) { buf.upload(v.data(), v.size() * 4); }
  float* ptr() const { return static_cast<float*>(buf.data()); }
  std::vector<float> get(size_t n) const {
    std::vector<float> out(n);
    buf.download(out.data(), n * 4);
    return out;
  }
  cuda::DeviceBuffer buf;
};

TEST_F(GpuTest, FusedUpdateMatchesFloat64ReferenceForEveryRule) {
  // DC-ASGD-a twice: unbounded, and with its default bound (Config::dc_bound)
  // at a lambda0 that makes the clamp act on most elements.
  struct Case {
    UpdateRule rule;
    float dc_bound, lambda0;
  };
  for (const Case& c : {Case{UpdateRule::kSgd, 0, 0.3f}, Case{UpdateRule::kMomentum, 0, 0.3f},
                        Case{UpdateRule::kDcAsgdConstant, 0, 0.3f}, Case{UpdateRule::kDcAsgdAdaptive, 0, 0.3f},
                        Case{UpdateRule::kDcAsgdAdaptive, 1.0f, 32.0f}}) {
    const UpdateRule rule = c.rule;
    SCOPED_TRACE(std::string(rule_name(rule)) + " dc_bound " + std::to_string(c.dc_bound));
    math::UpdateParams p;
    p.rule = rule;
    p.lambda = 0.5f;
    p.lambda0 = c.lambda0;
    p.dc_bound = c.dc_bound;
    p.ms_bias_correction = true;
    const math::Step step = ps::step_for(p, 0.05f, 7);  // a bias correction of 3.3 in play (DC-ASGD-a)
    auto w = random(kN, -1, 1), g = random(kN, -1, 1), bak = random(kN, -1, 1), st = random(kN, 0, 1);
    DeviceVector dw(w), dg(g), dbak(bak), dst(st);
    cuda::update(p, step, dw.ptr(), dg.ptr(), dbak.ptr(), dst.ptr(), kN);
    cuda::synchronize();
    auto gw = dw.get(kN), gst = dst.get(kN);
    size_t bad = 0;
    for (size_t i = 0; i < kN; ++i) {
      double S = st[i];
      double W = reference_update(p, step.lr, step.ms_scale == 1 ? 1.0 : reference_ms_scale(p.ms_momentum, 7), w[i],
                                  g[i], bak[i], S);
      // A few float32 operations: within 8 ulp of the magnitudes involved.
      double tol = 8 * std::ldexp(1.0, -24) * (std::fabs(W) + std::fabs(w[i]) + 1e-30) + 1e-12;
      bad += std::fabs(gw[i] - W) > tol * 4;
      if (rule == UpdateRule::kMomentum || rule == UpdateRule::kDcAsgdAdaptive)
        bad += std::fabs(gst[i] - S) > 8 * std::ldexp(1.0, -24) * std::fabs(S) + 1e-12;
    }
    EXPECT_EQ(bad, 0u);
  }
}

// An allocation that failed is not the next kernel launch's error: left as
// the thread's last error, a GPU shard's lane reported "CUDA kernel update:
// out of memory" for the next push after a worker's backup could not be made.
TEST_F(GpuTest, AFailedAllocationIsNotTheNextLaunchsError) {
  EXPECT_THROW(cuda::DeviceBuffer(size_t{1} << 52), Error);  // 4 PiB
  math::UpdateParams p;
  p.rule = UpdateRule::kSgd;
  auto w = random(1000, -1, 1), g = random(1000, -1, 1);
  DeviceVector dw(w), dg(g);
  EXPECT_NO_THROW(cuda::update(p, ps::step_for(p, 0.5f, 1), dw.ptr(), dg.ptr(), nullptr, nullptr, w.size()));
  cuda::synchronize();
  EXPECT_FLOAT_EQ(dw.get(1)[0], w[0] - 0.5f * g[0]);
}

TEST_F(GpuTest, Bf16CompressionMatchesTheCpuCodecBitForBit) {
  auto g = random(kN, -100, 100), residual = random(kN, -1e-3f, 1e-3f);
  // The edges a fast-math or flush-to-zero build of the kernel would change:
  // NaN, infinities, a sum that overflows, subnormal sums, and values half
  // way between two bf16 codes (ties to even) or one float either side.
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const float edges[][2] = {{nan, 0},
                            {inf, 0},
                            {-inf, 1e-3f},
                            {3.4e38f, 3.4e38f},
                            {-3.4e38f, -1e38f},
                            {1e-40f, 1e-41f},
                            {-1e-39f, 0},
                            {1.0f + 0x1p-8f, 0},
                            {1.0f + 0x3p-8f, 0},
                            {1.0f + 0x1p-8f, 0x1p-23f},
                            {1.0f + 0x1p-8f, -0x1p-23f},
                            {0x1p-126f, -0x1p-127f}};
  for (size_t k = 0; k < sizeof(edges) / sizeof(edges[0]); ++k) {
    g[k * 13] = edges[k][0];
    residual[k * 13] = edges[k][1];
  }
  DeviceVector dg(g), dres(residual);
  cuda::DeviceBuffer out(kN * 2), back(kN * 4);
  out.fill_bytes(0xff);  // poison
  back.fill_bytes(0xff);
  cuda::compress_bf16(dg.ptr(), dres.ptr(), static_cast<uint16_t*>(out.data()), kN);
  cuda::decompress_bf16(static_cast<const uint16_t*>(out.data()), static_cast<float*>(back.data()), kN);
  cuda::synchronize();
  std::vector<uint16_t> want(kN), got(kN);
  std::vector<float> cpu_residual = residual, want_back(kN), got_back(kN);
  math::compress_bf16(g.data(), cpu_residual.data(), want.data(), kN);
  math::decompress_bf16(want.data(), want_back.data(), kN);
  out.download(got.data(), kN * 2);
  back.download(got_back.data(), kN * 4);
  auto got_residual = dres.get(kN);
  EXPECT_EQ(std::memcmp(got.data(), want.data(), kN * 2), 0) << "bf16 codes differ";
  EXPECT_EQ(std::memcmp(got_residual.data(), cpu_residual.data(), kN * 4), 0) << "residuals differ";
  EXPECT_EQ(std::memcmp(got_back.data(), want_back.data(), kN * 4), 0) << "decompression differs";
  // And the codes are the float64 nearest bf16: relative error within 2^-9.
  for (size_t i = 1; i < kN; i += 997) {  // past the edges above
    double v = double(g[i]) + double(residual[i]);
    EXPECT_LE(std::fabs(double(math::from_bf16(got[i])) - v), std::ldexp(std::fabs(v), -8)) << i;
  }
}

// Every one of the 65,536 codes (NaNs, infinities, subnormals), through the
// vectorized path (16-byte aligned) and the element path (offset pointers), at
// lengths around the 8-code groups and the two-groups-per-step loop.
TEST_F(GpuTest, Bf16DecompressionIsBitIdenticalAtEveryAlignmentAndLength) {
  constexpr size_t kCodes = 1u << 16, kPad = 8;
  std::vector<uint16_t> codes(kCodes + kPad);
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint16_t>(i * 40503u);  // odd: all codes once
  cuda::DeviceBuffer in(codes.size() * 2), out((codes.size() + kPad) * 4);
  in.upload(codes.data(), codes.size() * 2);
  for (size_t in_offset : {0, 1, 8}) {
    for (size_t out_offset : {0, 3, 4}) {
      for (size_t n : {size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{15}, size_t{17}, size_t{4103}, kCodes}) {
        SCOPED_TRACE("in +" + std::to_string(in_offset) + ", out +" + std::to_string(out_offset) + ", n " +
                     std::to_string(n));
        out.fill_bytes(0xa5);  // poison: a code never written shows, and so does one written past n
        const uint16_t* src = static_cast<const uint16_t*>(in.data()) + in_offset;
        cuda::decompress_bf16(src, static_cast<float*>(out.data()) + out_offset, n);
        cuda::synchronize();
        std::vector<float> got(codes.size() + kPad), want(n);
        out.download(got.data(), got.size() * 4);
        math::decompress_bf16(codes.data() + in_offset, want.data(), n);
        EXPECT_EQ(std::memcmp(got.data() + out_offset, want.data(), n * 4), 0);
        uint32_t poison = 0, after = 0;
        std::memset(&poison, 0xa5, 4);
        std::memcpy(&after, got.data() + out_offset + n, 4);
        EXPECT_EQ(after, poison) << "wrote past the end";
      }
    }
  }
}

TEST_F(GpuTest, FusedBf16UpdateEqualsDecompressThenUpdate) {
  math::UpdateParams p;
  p.rule = UpdateRule::kDcAsgdAdaptive;
  p.lambda0 = 0.3f;
  const math::Step step = ps::step_for(p, 0.05f, 3);
  auto w = random(kN, -1, 1), g = random(kN, -1, 1), bak = random(kN, -1, 1), st = random(kN, 0, 1);
  std::vector<uint16_t> codes(kN);
  std::vector<float> zero(kN, 0.0f), widened(kN);
  math::compress_bf16(g.data(), zero.data(), codes.data(), kN);
  math::decompress_bf16(codes.data(), widened.data(), kN);
  DeviceVector w1(w), w2(w), s1(st), s2(st), dbak(bak), dwide(widened);
  cuda::DeviceBuffer dcodes(kN * 2);
  dcodes.upload(codes.data(), kN * 2);
  cuda::update_bf16(p, step, w1.ptr(), static_cast<const uint16_t*>(dcodes.data()), dbak.ptr(), s1.ptr(), kN);
  cuda::update(p, step, w2.ptr(), dwide.ptr(), dbak.ptr(), s2.ptr(), kN);
  cuda::synchronize();
  auto r1 = w1.get(kN), r2 = w2.get(kN);
  EXPECT_EQ(std::memcmp(r1.data(), r2.data(), kN * 4), 0);
}

TEST(GpuAbsent, EntryPointsSayWhyTheyCannotRun) {
  cuda::GpuInfo info = cuda::probe_gpus();
  if (info.device_count() > 0) GTEST_SKIP() << "a GPU is present; GpuTest covers it";
  EXPECT_FALSE(info.reason.empty());
  std::vector<float> host(16);
  EXPECT_FALSE(cuda::is_device_pointer(host.data()));
  try {
    cuda::DeviceBuffer b(64);
    ADD_FAILURE() << "allocating device memory without a device succeeded at " << b.data();
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_TRUE(what.find("cudaMalloc") != std::string::npos || what.find("without CUDA") != std::string::npos) << what;
  }
}

}  // namespace
}  // namespace rdmaps::test
