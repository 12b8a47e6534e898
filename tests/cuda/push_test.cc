// GPU gradients end to end: device memory -> server over UCX tcp -> device
// parameters, bit-identical to the same run from host memory (f32 and bf16
// wire). Skips, saying why, where no GPU is.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "cuda/device_memory.h"
#include "cuda/gpu_probe.h"
#include "rdmaps/client.h"
#include "rdmaps/error.h"
#include "rdmaps/server.h"

namespace rdmaps::test {
namespace {

constexpr size_t kFloats = 3 * 262144 + 1000;  // four pieces: staging wraps around its ring
constexpr int kSteps = 5;

// Trains kSteps of DC-ASGD-a on one server, pulling after every other step
// (the compensation acts once a worker was sent parameters: BackupCover);
// gradients and parameters live on the GPU when `device` (GPU `gpu`, while
// the client's thread has GPU 0 current); the server is made with GPU
// `server_gpu` current. Returns the final parameters and the client's GPU path.
std::pair<std::vector<float>, std::string> run(bool device, WireFormat wire, bool gpu_shard = false,
                                               uint32_t staging_depth = 0, int gpu = 0, int server_gpu = 0,
                                               GpuPathChoice gpu_path = GpuPathChoice::kAuto) {
  Config c;
  c.transport = "tcp";
  c.staging_depth = staging_depth;
  c.gpu_path = gpu_path;
  c.rule = UpdateRule::kDcAsgdAdaptive;
  c.learning_rate = 0.05f;
  c.wire = wire;
  ServerOptions so;
  so.listen = "127.0.0.1:0";
  so.config = c;
  so.log_connections = false;
  so.gpu_shard = gpu_shard;
  cuda::use_device(server_gpu);
  Server server(so);
  cuda::use_device(0);
  std::thread serving([&] { server.run(); });
  ClientOptions co;
  co.servers = {server.address()};
  co.config = c;
  std::vector<float> host(kFloats), g(kFloats), pulled(kFloats);
  std::string path;
  {
    Client client(co);
    client.declare("w", kFloats);
    client.connect();
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> d(-1, 1);
    for (auto& x : host) x = d(rng);
    client.init("w", host);
    if (device) cuda::use_device(gpu);
    cuda::DeviceBuffer dg(device ? kFloats * 4 : 0), dw(device ? kFloats * 4 : 0);
    if (device) cuda::use_device(0);
    for (int step = 0; step < kSteps; ++step) {
      for (auto& x : g) x = d(rng);
      if (device) {
        dg.upload(g.data(), kFloats * 4);
        cuda::synchronize();  // on the legacy stream; the push reads it on a stream of its own
        client.push("w", std::span<const float>(static_cast<const float*>(dg.data()), kFloats));
      } else {
        client.push("w", g);
      }
      client.clock();
      if (step % 2 == 0) client.pull("w", pulled);
    }
    if (device) {
      dw.fill_bytes(0xff);  // poison
      cuda::synchronize();  // before the pull's own stream writes it
      client.pull("w", std::span<float>(static_cast<float*>(dw.data()), kFloats));
      dw.download(host.data(), kFloats * 4);
    } else {
      client.pull("w", host);
    }
    path = client.stats().gpu_path;
  }
  serving.join();
  return {host, path};
}

TEST(GpuPush, DeviceGradientsTrainBitIdenticallyToHostOnes) {
  cuda::GpuInfo info = cuda::probe_gpus();
  if (info.device_count() == 0) GTEST_SKIP() << "no CUDA device: " << info.reason;
  for (WireFormat wire : {WireFormat::kF32, WireFormat::kBf16}) {
    SCOPED_TRACE(wire == WireFormat::kBf16 ? "bf16" : "f32");
    auto [from_host, host_path] = run(false, wire);
    auto [from_device, device_path] = run(true, wire);
    EXPECT_EQ(host_path, "none");
    EXPECT_TRUE(device_path == "staged" || device_path == "direct") << device_path;
    EXPECT_EQ(std::memcmp(from_host.data(), from_device.data(), kFloats * 4), 0);
  }
}

// The staged pipeline at every depth: fewer chunks than pieces (the ring wraps
// and each buffer is refilled only after its send completed), as many, more.
TEST(GpuPush, StagedPushIsBitIdenticalAtEveryRingDepth) {
  cuda::GpuInfo info = cuda::probe_gpus();
  if (info.device_count() == 0) GTEST_SKIP() << "no CUDA device: " << info.reason;
  // bf16 too: a copy polled before it ended left "not ready" as the thread's
  // last CUDA error, and the next push's encoding kernel failed on it.
  for (WireFormat wire : {WireFormat::kF32, WireFormat::kBf16}) {
    auto [from_host, host_path] = run(false, wire);
    for (uint32_t depth : {1u, 2u, 4u, 9u}) {
      SCOPED_TRACE(std::string(wire == WireFormat::kBf16 ? "bf16" : "f32") + ", staging depth " +
                   std::to_string(depth));
      // Staged by choice: a UCX that reads GPU memory sent it directly, and the ring went untested (skipped).
      auto [from_device, device_path] = run(true, wire, false, depth, 0, 0, GpuPathChoice::kStaged);
      EXPECT_EQ(device_path, "staged");
      EXPECT_EQ(std::memcmp(from_host.data(), from_device.data(), kFloats * 4), 0);
    }
  }
}

// Tensors on GPU 1 pushed and pulled by a thread whose current GPU is 0 (as
// rdmaps.torch's communication thread): the ring's stream, the residual and
// the bf16 encoding went to GPU 0, which cannot read GPU 1's memory.
TEST(GpuPush, TensorsOnAnotherGpuThanTheThreadsTrainAsOnTheHost) {
  cuda::GpuInfo info = cuda::probe_gpus();
  if (info.device_count() < 2) GTEST_SKIP() << "needs two CUDA devices: " << info.device_count() << " here";
  for (WireFormat wire : {WireFormat::kF32, WireFormat::kBf16}) {
    SCOPED_TRACE(wire == WireFormat::kBf16 ? "bf16" : "f32");
    auto from_host = run(false, wire).first;
    std::vector<float> from_device;
    std::thread other([&] { from_device = run(true, wire, false, 0, 1).first; });
    other.join();
    EXPECT_EQ(std::memcmp(from_host.data(), from_device.data(), kFloats * 4), 0);
  }
}

TEST(GpuPush, ServerWithItsShardOnTheGpuMatchesTheHostServer) {
  cuda::GpuInfo info = cuda::probe_gpus();
  if (info.device_count() == 0) GTEST_SKIP() << "no CUDA device: " << info.reason;
  for (WireFormat wire : {WireFormat::kF32, WireFormat::kBf16}) {
    SCOPED_TRACE(wire == WireFormat::kBf16 ? "bf16" : "f32");
    auto host = run(false, wire).first;
    auto gpu = run(false, wire, /*gpu_shard=*/true).first;
    size_t bad = 0;
    for (size_t i = 0; i < kFloats; ++i)  // nvcc may fuse multiply-adds the CPU rounds twice
      bad += std::fabs(gpu[i] - host[i]) > 1e-5f * (std::fabs(host[i]) + 1.0f);
    EXPECT_EQ(bad, 0u);
  }
}

// A shard made on GPU 1 (the thread that made the Server had it current) is
// updated there, by lanes whose threads start on GPU 0: its kernels and
// copies ran on GPU 0, with GPU 1's memory.
TEST(GpuPush, AGpuShardMadeOnAnotherGpuThanItsLanesMatchesTheHostServer) {
  cuda::GpuInfo info = cuda::probe_gpus();
  if (info.device_count() < 2) GTEST_SKIP() << "needs two CUDA devices: " << info.device_count() << " here";
  auto host = run(false, WireFormat::kF32).first;
  auto gpu = run(false, WireFormat::kF32, /*gpu_shard=*/true, 0, 0, /*server_gpu=*/1).first;
  size_t bad = 0;
  for (size_t i = 0; i < kFloats; ++i) bad += std::fabs(gpu[i] - host[i]) > 1e-5f * (std::fabs(host[i]) + 1.0f);
  EXPECT_EQ(bad, 0u);
}

TEST(GpuPush, GpuShardWithoutADeviceIsRefusedClearly) {
  cuda::GpuInfo info = cuda::probe_gpus();
  if (info.device_count() > 0) GTEST_SKIP() << "a GPU is present";
  ServerOptions so;
  so.listen = "127.0.0.1:0";
  so.gpu_shard = true;
  try {
    Server server(so);
    ADD_FAILURE() << "a GPU-shard server started without a device at " << server.address();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("--gpu-shard needs a CUDA device"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace rdmaps::test
