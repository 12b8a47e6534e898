// The machine report and the GPU path chosen from what the transport moves.
#include "src/api/capabilities.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/device_memory.h"
#include "tests/common/peer_process.h"
#include "transport/context.h"
#include "transport/ucx/capabilities.h"

namespace rdmaps::test {
namespace {

transport::MemorySupport ucx_of(unsigned major, unsigned minor, bool cuda) {
  return transport::ucx::judge_memory_support(
      major, minor, 0, cuda ? std::vector<std::string>{"host", "cuda"} : std::vector<std::string>{"host"});
}

TEST(Capabilities, GpuPathIsDirectOnlyWithCudaAwareUcxFrom116) {
  std::string why;
  EXPECT_EQ(choose_gpu_path(ucx_of(1, 17, true), 0, &why), GpuPath::kNone);
  EXPECT_EQ(choose_gpu_path(ucx_of(1, 13, false), 1, &why), GpuPath::kStaged);
  EXPECT_NE(why.find("host memory only"), std::string::npos) << why;
  EXPECT_EQ(choose_gpu_path(ucx_of(1, 15, true), 2, &why), GpuPath::kStaged);
  EXPECT_NE(why.find("before 1.16"), std::string::npos) << why;
  EXPECT_EQ(choose_gpu_path(ucx_of(1, 16, true), 1, &why), GpuPath::kDirect);
  EXPECT_EQ(choose_gpu_path(ucx_of(2, 0, true), 1, &why), GpuPath::kDirect);
  EXPECT_NE(why.find("device pointers go to UCX"), std::string::npos) << why;
  // Where UCX takes device pointers but the node moves them badly (no GPUDirect RDMA): staged by choice.
  EXPECT_EQ(choose_gpu_path(ucx_of(1, 17, true), 1, &why, GpuPathChoice::kStaged), GpuPath::kStaged);
  EXPECT_NE(why.find("--gpu-path staged"), std::string::npos) << why;
  Config c;
  EXPECT_EQ(c.gpu_path, GpuPathChoice::kAuto);
  parse_config(c, {"--gpu-path", "staged"}, nullptr);
  EXPECT_EQ(c.gpu_path, GpuPathChoice::kStaged);
}

// The live context answers for its own configuration: shm and tcp contexts
// here move host memory, as the probe of the same configuration says.
TEST(Capabilities, LiveContextAnswersWhatItMoves) {
  for (auto kind : {transport::TransportKind::kShm, transport::TransportKind::kTcp}) {
    transport::ContextOptions o;
    o.transport = kind;
    auto context = transport::create_context(o);
    const transport::MemorySupport live = context->memory_support(), probed = transport::probe_memory_support(o);
    EXPECT_TRUE(live.error.empty()) << live.error;
    EXPECT_EQ(live.memory_types, probed.memory_types) << transport::transport_name(kind);
    EXPECT_EQ(live.device_memory, probed.device_memory);
    EXPECT_EQ(live.backend, "UCX");
    ASSERT_FALSE(live.memory_types.empty());
    EXPECT_EQ(live.memory_types[0], "host");
  }
}

TEST(Capabilities, ProbeOfThisMachineIsConsistent) {
  Capabilities caps = probe_capabilities();
  EXPECT_TRUE(caps.transport.error.empty()) << caps.transport.error;
  ASSERT_FALSE(caps.transport.memory_types.empty());
  EXPECT_EQ(caps.transport.memory_types[0], "host");
  EXPECT_EQ(caps.gpu_path, choose_gpu_path(caps.transport, caps.gpu.device_count(), nullptr));
  EXPECT_NE(describe(caps).find("GPU path: "), std::string::npos);
  EXPECT_EQ(to_json(caps).front(), '{');
}

// Asks where host memory lies, as every push does; exits 3 where that loaded the CUDA driver.
RDMAPS_TEST_PEER(host_memory_asker) {
  (void)args;
  float x[4] = {};
  if (cuda::device_of(x) != -1) return 4;
  std::ifstream maps("/proc/self/maps");
  std::stringstream text;
  text << maps.rdbuf();
  return text.str().find("libcuda") == std::string::npos ? 0 : 3;
}

// A CUDA build loaded and initialised the driver (cuInit) at the first push of
// host memory: seconds on a node of GPUs without persistence mode, and no CUDA
// left to a child forked after. No device memory exists before something loaded it.
TEST(Capabilities, AskingWhereHostMemoryLiesLoadsNoCudaDriver) {
  const std::filesystem::path stub = "/usr/local/cuda/targets/x86_64-linux/lib/stubs/libcuda.so";
  if (!std::filesystem::exists(stub)) GTEST_SKIP() << "no " << stub << " to stand for a driver on the search path";
  char dir[] = "/tmp/rdmaps-libcuda-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  std::filesystem::create_symlink(stub, std::filesystem::path(dir) / "libcuda.so.1");
  const char* before = std::getenv("LD_LIBRARY_PATH");
  const std::string kept = before ? before : "";
  ::setenv("LD_LIBRARY_PATH", (std::string(dir) + (kept.empty() ? "" : ":" + kept)).c_str(), 1);
  test::PeerProcess asker("host_memory_asker", transport::TransportKind::kTcp, 0, 0);
  if (before)
    ::setenv("LD_LIBRARY_PATH", kept.c_str(), 1);
  else
    ::unsetenv("LD_LIBRARY_PATH");
  EXPECT_EQ(asker.wait(std::chrono::seconds(30)), 0) << "3: the driver was loaded; 4: host memory taken for a GPU's";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace rdmaps::test
