#include "bench/perf_gpu.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench/perf_options.h"
#include "cuda/device_memory.h"
#include "cuda/gpu_probe.h"
#include "cuda/kernels.h"
#include "rdmaps/client.h"
#include "rdmaps/error.h"
#include "rdmaps/server.h"
#include "src/capabilities.h"
#include "src/update_rules.h"

namespace rdmaps::bench {
namespace {

constexpr int kSkip = 77;

struct Row {
  std::string what;
  double gbps, bound_gbps;
};

void print(const std::vector<Row>& rows, bool json, const std::string& device, const std::string& path) {
  if (json) {
    std::printf("{\"device\":\"%s\",\"gpu_path\":\"%s\",\"rows\":[", device.c_str(), path.c_str());
    for (size_t i = 0; i < rows.size(); ++i)
      std::printf("%s{\"what\":\"%s\",\"GBps\":%.2f,\"bound_GBps\":%.2f,\"ratio\":%.3f}", i ? "," : "",
                  rows[i].what.c_str(), rows[i].gbps, rows[i].bound_gbps, rows[i].gbps / rows[i].bound_gbps);
    std::printf("]}\n");
    return;
  }
  std::printf(
      "# %s, GPU path %s; bound: kernels = device-to-device copy in this run (bytes read+written),\n"
      "# staged push = the same push from pinned host memory\n",
      device.c_str(), path.c_str());
  std::printf("%-34s %10s %10s %7s\n", "what", "GB/s", "bound", "ratio");
  for (const auto& r : rows)
    std::printf("%-34s %10.1f %10.1f %7.3f\n", r.what.c_str(), r.gbps, r.bound_gbps, r.gbps / r.bound_gbps);
}

std::vector<Row> kernels(size_t n, int iters) {
  cuda::DeviceBuffer a(n * 4), b(n * 4), w(n * 4), g(n * 4), bak(n * 4), st(n * 4), res(n * 4), code(n * 2);
  for (auto* buf : {&a, &b, &w, &g, &bak, &st, &res}) buf->fill_bytes(0);
  auto f = [](const cuda::DeviceBuffer& d) { return static_cast<float*>(d.data()); };
  auto gbps = [&](double bytes, double ms) { return bytes * iters / (ms * 1e-3) / 1e9; };
  cuda::copy_device(b.data(), a.data(), n * 4);  // warm-up
  cuda::synchronize();
  double copy = gbps(2.0 * n * 4, cuda::time_ms([&] { cuda::copy_device(b.data(), a.data(), n * 4); }, iters));
  std::vector<Row> rows{{"device-to-device copy", copy, copy}};
  struct Case {
    const char* what;
    UpdateRule rule;
    double bytes_per_float;  // moved by one pass
  };
  for (const Case& c : {Case{"update sgd (w,g -> w)", UpdateRule::kSgd, 12},
                        Case{"update dc-asgd-c (w,g,bak -> w)", UpdateRule::kDcAsgdConstant, 16},
                        Case{"update dc-asgd-a (w,g,bak,ms -> w,ms)", UpdateRule::kDcAsgdAdaptive, 24}}) {
    math::UpdateParams params;  // the defaults: momentum 0.9, lambda 0.04, lambda0 2, ms-momentum 0.95
    params.rule = c.rule;
    const math::Step step = ps::step_for(params, 1e-3f, 1000);
    auto run = [&] { cuda::update(params, step, f(w), f(g), f(bak), f(st), n); };
    run();
    cuda::synchronize();
    rows.push_back({c.what, gbps(c.bytes_per_float * n, cuda::time_ms(run, iters)), copy});
  }
  auto compress = [&] { cuda::compress_bf16(f(g), f(res), static_cast<uint16_t*>(code.data()), n); };
  compress();
  cuda::synchronize();
  rows.push_back({"compress bf16 (g,res -> res,code)", gbps(14.0 * n, cuda::time_ms(compress, iters)), copy});
  auto decompress = [&] { cuda::decompress_bf16(static_cast<const uint16_t*>(code.data()), f(w), n); };
  rows.push_back({"decompress bf16 (code -> g)", gbps(6.0 * n, cuda::time_ms(decompress, iters)), copy});
  return rows;
}

// Push throughput from `data` (device or pinned host) to an in-process server.
double push_gbps(const std::string& transport, size_t n, int iters, const float* data, uint32_t staging_depth) {
  Config c;
  c.transport = transport;
  c.staging_depth = staging_depth;
  c.staleness = kInfiniteStaleness;
  ServerOptions so;
  so.listen = "127.0.0.1:0";
  so.config = c;
  so.log_connections = false;
  Server server(so);
  std::thread serving([&] { server.run(); });
  double seconds;
  {
    ClientOptions co;
    co.servers = {server.address()};
    co.config = c;
    Client client(co);
    client.declare("w", n);
    client.connect();
    std::span<const float> g(data, n);
    client.push("w", g);  // warm-up
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) client.push("w", g);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  serving.join();
  return static_cast<double>(n) * 4 * iters / seconds / 1e9;
}

}  // namespace

int perf_gpu_main(int argc, char** argv, int first) {
  Flags f(argc, argv, first, {"floats", "push-floats", "iters", "transport", "staging-depth", "json", "help"},
          {"json", "help"});
  if (f.has("help")) {
    std::printf(
        "rdmaps-perf gpu [flags]\n"
        "  GPU kernels (fused update, bf16 codec) against the device-to-device copy bandwidth\n"
        "  of the same run, and pushes from device memory (GPU path: direct or staged) against\n"
        "  the same pushes from pinned host memory. Exits 77 where no GPU is.\n\n"
        "  --floats N      elements (64M)\n"
        "  --iters N       timed repetitions (20)\n"
        "  --transport T   for the push comparison: tcp, shm, auto (auto)\n"
        "  --push-floats N elements per push in the push comparison (--floats, at most 16M)\n"
        "  --staging-depth N  pinned chunks in flight on the staged path (0: the default, 8 MiB)\n"
        "  --json          one JSON object\n");
    return 0;
  }
  cuda::GpuInfo info = cuda::probe_gpus();
  if (info.device_count() == 0) {
    std::fprintf(stderr, "rdmaps-perf gpu: no CUDA device: %s\n", info.reason.c_str());
    return kSkip;
  }
  const size_t n = f.u64("floats", 64u << 20);
  const int iters = static_cast<int>(f.u64("iters", 20));
  std::vector<Row> rows = kernels(n, iters);

  const size_t push_floats =
      f.has("push-floats") ? parse_size(f.str("push-floats", ""), "push-floats") : std::min<size_t>(n, 16u << 20);
  if (push_floats == 0) throw Error(Errc::kInvalidArgument, "--push-floats: needs at least 1");
  const uint64_t depth = f.u64("staging-depth", 0);
  if (depth > 64) throw Error(Errc::kInvalidArgument, "--staging-depth: " + std::to_string(depth) + " is above 64");
  const std::string transport = f.str("transport", "auto");
  cuda::PinnedBuffer pinned(push_floats * 4);
  std::memset(pinned.data(), 0, push_floats * 4);
  cuda::DeviceBuffer device(push_floats * 4);
  device.fill_bytes(0);
  double host = push_gbps(transport, push_floats, iters, static_cast<const float*>(pinned.data()), 0);
  double gpu =
      push_gbps(transport, push_floats, iters, static_cast<const float*>(device.data()), static_cast<uint32_t>(depth));
  rows.push_back({"push from device (" + transport + ")", gpu, host});

  std::string why;
  transport::ContextOptions probe;
  probe.transport = transport::parse_transport(transport);
  GpuPath path = choose_gpu_path(transport::probe_memory_support(probe), info.device_count(), &why);
  print(rows, f.has("json"), info.devices[0].name, gpu_path_name(path));
  return 0;
}

}  // namespace rdmaps::bench
