// Where memory lies, asked without making a CUDA context: the runtime's query
// made the calling thread's current GPU's primary context (GPU 0 for a new
// thread, as rdmaps.torch's communication thread is), a few hundred MiB on
// GPU 0 for every rank of a node. Skips, saying why, where no GPU is.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "cuda/device_memory.h"
#include "cuda/gpu_probe.h"
#include "cuda/kernels.h"

namespace rdmaps::test {
namespace {

TEST(GpuMemory, AskingWhereMemoryLiesMakesNoContext) {
  cuda::GpuInfo info = cuda::probe_gpus();
  if (info.device_count() == 0) GTEST_SKIP() << "no CUDA device: " << info.reason;
  const int gpu = info.device_count() - 1;  // not the GPU a new thread has current
  cuda::use_device(gpu);
  cuda::DeviceBuffer on_device(4096);
  cuda::PinnedBuffer pinned(4096);
  std::vector<float> host(16);
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(lib, nullptr) << dlerror();
  using GetCurrent = int (*)(void**);
  auto context_here = reinterpret_cast<GetCurrent>(dlsym(lib, "cuCtxGetCurrent"));
  ASSERT_NE(context_here, nullptr);
  std::thread asking([&] {
    EXPECT_FALSE(cuda::is_device_pointer(host.data()));
    EXPECT_FALSE(cuda::is_device_pointer(pinned.data())) << "page-locked host memory is host memory";
    EXPECT_EQ(cuda::device_of(on_device.data()), gpu);
    EXPECT_EQ(cuda::device_of(static_cast<const char*>(on_device.data()) + 100), gpu) << "inside an allocation";
    void* context = &context;
    EXPECT_EQ(context_here(&context), 0);
    EXPECT_EQ(context, nullptr) << "asking where memory lies made a CUDA context on this thread";
  });
  asking.join();
  dlclose(lib);
}

TEST(GpuMemory, TheKernelsOfThisBuildRunOnThisGpu) {
  cuda::GpuInfo info = cuda::probe_gpus();
  if (info.device_count() == 0) GTEST_SKIP() << "no CUDA device: " << info.reason;
  for (const auto& d : info.devices) {
    cuda::use_device(d.index);
    EXPECT_NO_THROW(cuda::require_kernels_run_here()) << d.name << " sm_" << d.major << d.minor;
  }
}

}  // namespace
}  // namespace rdmaps::test
