// rdmaps-info: what this machine offers rdmaps (UCX memory types, RDMA ports,
// CUDA devices, GPUDirect prerequisites) and the GPU path that follows.
#include <cstdio>
#include <cstring>
#include <string>

#include "src/api/capabilities.h"
#include "src/tools/program_start.h"

namespace {
int run(int argc, char** argv) {
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) {
      json = true;
    } else if (std::strcmp(argv[i], "--version") == 0) {
      std::printf("%s\n", rdmaps_build_version());
      return 0;
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf(
          "usage: rdmaps-info [--json] [--version]\n\n"
          "  Reports the UCX version and the memory types its transports handle, RDMA\n"
          "  devices and ports (libibverbs), CUDA devices, whether nvidia_peermem is loaded\n"
          "  and dma-buf is supported, and the GPU path rdmaps will use (direct, staged).\n");
      return 0;
    } else {
      std::fprintf(stderr, "rdmaps-info: %s '%s' (--json and --version take no value; see --help)\n",
                   argv[i][0] == '-' ? "unknown flag" : "unexpected argument", argv[i]);
      return 2;
    }
  }
  rdmaps::Capabilities caps = rdmaps::probe_capabilities();
  if (json) {
    std::printf("%s\n", rdmaps::to_json(caps).c_str());
  } else {
    std::printf("rdmaps %s (librdmaps ABI %d, %s)\n%s\n", rdmaps_build_version(), rdmaps_abi_version(),
                rdmaps_library_path(), rdmaps::describe(caps).c_str());
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  if (!rdmaps::tools::program_start("rdmaps-info")) return 1;
  return rdmaps::tools::program_end("rdmaps-info", run(argc, argv));
}
