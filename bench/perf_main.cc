// rdmaps-perf: microbenchmarks of the transport and the parameter server.
#include <cstdio>
#include <cstring>
#include <string>

#include "bench/perf_gpu.h"
#include "bench/perf_ps.h"
#include "bench/perf_transport.h"
#include "rdmaps/error.h"
#include "rdmaps/version.h"
#include "src/api/capabilities.h"
#include "src/tools/child_process.h"
#include "src/tools/program_start.h"

namespace {
void usage() {
  std::printf(
      "usage: rdmaps-perf <benchmark> [flags]\n\nbenchmarks:\n"
      "  transport   put/get/active-message bandwidth and latency between two processes\n"
      "  ps          push + apply + write-back through server and worker processes\n"
      "  gpu         GPU kernels vs device copy bandwidth; staged vs pinned-host pushes\n\n"
      "rdmaps-perf <benchmark> --help lists its flags.\n");
}

int run(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {  // as the other programs and each benchmark take it
    std::printf("%s\n", rdmaps_build_version());
    return 0;
  }
  try {
    // Child processes (--role, --report-fd) leave the banner to the parent;
    // --json output is for scripts (rdmaps-info --json has the same facts).
    bool quiet = false;
    for (int i = 2; i < argc; ++i)
      quiet |=
          !std::strcmp(argv[i], "--role") || !std::strcmp(argv[i], "--report-fd") || !std::strcmp(argv[i], "--json");
    if (!quiet) std::fprintf(stderr, "rdmaps-perf: %s\n", rdmaps::summary(rdmaps::probe_capabilities()).c_str());
    if (!std::strcmp(argv[1], "transport")) return rdmaps::bench::perf_transport_main(argc, argv, 2);
    if (!std::strcmp(argv[1], "ps")) return rdmaps::bench::perf_ps_main(argc, argv, 2);
    if (!std::strcmp(argv[1], "gpu")) return rdmaps::bench::perf_gpu_main(argc, argv, 2);
    std::fprintf(stderr, "rdmaps-perf: unknown benchmark '%s'\n", argv[1]);
    usage();
    return 2;
  } catch (...) {
    return rdmaps::tools::report_error("rdmaps-perf", "fewer --iters, --lat-iters or --floats?");
  }
}
}  // namespace

int main(int argc, char** argv) {
  if (!rdmaps::tools::program_start("rdmaps-perf")) return 1;
  rdmaps::tools::end_with_parent("rdmaps-perf");
  return rdmaps::tools::program_end("rdmaps-perf", run(argc, argv));
}
