#include "bench/perf_gpu.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
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
#include "src/api/capabilities.h"
#include "src/ps/update_rules.h"

namespace rdmaps::bench {
namespace {

struct Row {
  std::string what;
  double gbps, bound_gbps;
};

void print(const std::vector<Row>& rows, bool json, const std::string& device, const std::string& path) {
  if (json) {
    // Rounded as the table is: the figures are measurements, not exact values.
    auto rounded = [](double v, double scale) { return std::round(v * scale) / scale; };
    nlohmann::ordered_json j = {{"device", device}, {"gpu_path", path}, {"rows", nlohmann::ordered_json::array()}};
    for (const auto& r : rows)
      j["rows"].push_back({{"what", r.what},
                           {"GBps", rounded(r.gbps, 100)},
                           {"bound_GBps", rounded(r.bound_gbps, 100)},
                           {"ratio", rounded(r.gbps / r.bound_gbps, 1000)}});
    std::printf("%s\n", j.dump().c_str());
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
    Config defaults;  // the kernel a server runs at its defaults (DC-ASGD-a's bound and bias correction)
    defaults.rule = c.rule;
    const math::UpdateParams params = ps::update_params(defaults);
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
  decompress();  // warm-up, as every row: the kernel's first launch (its lazy loading) was timed
  cuda::synchronize();
  rows.push_back({"decompress bf16 (code -> w)", gbps(6.0 * n, cuda::time_ms(decompress, iters)), copy});
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

bool no_gpu(const cuda::GpuInfo& gpus, const char* prefix, const char* needs) {
  if (gpus.device_count() > 0) return false;
  std::fprintf(stderr, "%s: %s needs a CUDA device: %s\n", prefix, needs, gpus.reason.c_str());
  return true;
}

int perf_gpu_main(int argc, char** argv, int first) {
  uint64_t n = 64u << 20, iters = 20, push_floats = 0, depth = 0;
  std::string transport = "auto";
  bool json = false;
  CLI::App app(
      "GPU kernels (fused update, bf16 codec) against the device-to-device copy bandwidth\n"
      "of the same run, and pushes from device memory (GPU path: direct or staged) against\n"
      "the same pushes from pinned host memory. Exits 77 where no GPU is.",
      "rdmaps-perf gpu");
  cli::set_defaults(app);
  add_size(app, "--floats", n, 1, 1ull << 31, "elements");
  add_size(app, "--iters", iters, 1, 1u << 20, "timed repetitions");
  app.add_option("--transport", transport, "for the push comparison")
      ->check(cli::one_of({"tcp", "shm", "auto"}))
      ->capture_default_str();
  add_size(app, "--push-floats", push_floats, 1, 1ull << 31, "elements per push in the push comparison")
      ->default_str("--floats, at most 16M");
  app.add_option("--staging-depth", depth, "pinned chunks in flight on the staged path (0: the default, 8 MiB)")
      ->transform(cli::count(0, 64))  // in decimal: CLI11 reads 010 as octal 8
      ->capture_default_str();
  cli::add_switch(app, "--json", json, "one JSON object");
  if (!parse(app, argc, argv, first)) return 0;
  const cuda::GpuInfo info = cuda::probe_gpus();
  if (no_gpu(info, "rdmaps-perf gpu", "this benchmark")) return kSkipExit;
  std::vector<Row> rows = kernels(n, static_cast<int>(iters));
  if (push_floats == 0) push_floats = std::min<uint64_t>(n, 16u << 20);
  cuda::PinnedBuffer pinned(push_floats * 4);
  std::memset(pinned.data(), 0, push_floats * 4);
  cuda::DeviceBuffer device(push_floats * 4);
  device.fill_bytes(0);
  double host = push_gbps(transport, push_floats, static_cast<int>(iters), static_cast<const float*>(pinned.data()), 0);
  double gpu = push_gbps(transport, push_floats, static_cast<int>(iters), static_cast<const float*>(device.data()),
                         static_cast<uint32_t>(depth));
  rows.push_back({"push from device (" + transport + ")", gpu, host});

  std::string why;
  transport::ContextOptions probe;
  probe.transport = transport::parse_transport(transport);
  GpuPath path = choose_gpu_path(transport::probe_memory_support(probe), info.device_count(), &why);
  print(rows, json, info.devices[0].name, gpu_path_name(path));
  return 0;
}

}  // namespace rdmaps::bench
