#include "bench/perf_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace rdmaps::bench {

Percentiles Percentiles::of(std::vector<double> samples) {
  Percentiles p;
  if (samples.empty()) return p;
  std::sort(samples.begin(), samples.end());
  // Nearest rank, the ceil(q*n)-th smallest: floor(q*n) made p99 of 100 samples their maximum.
  auto at = [&](double q) {
    const auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(samples.size()) - 1e-9));
    return samples[std::clamp<size_t>(rank, 1, samples.size()) - 1];
  };
  p.p50 = at(0.50);
  p.p99 = at(0.99);
  p.max = samples.back();
  return p;
}

void print_transport_header(const std::string& config_lines) {
  std::printf("%s", config_lines.c_str());
  std::printf("%12s %10s %7s %12s %12s %12s %10s %10s %10s %7s\n", "bytes", "iters", "window", "MB/s", "MiB/s", "msg/s",
              "p50_us", "p99_us", "max_us", "wrong");
}

void print_transport_row(const TransportRow& r) {
  std::printf("%12zu %10llu %7llu %12.1f %12.1f %12.0f ", r.bytes, static_cast<unsigned long long>(r.iters),
              static_cast<unsigned long long>(r.window), r.bw_MBps(), r.bw_MiBps(), r.msg_per_s());
  if (r.has_latency())
    std::printf("%10.3f %10.3f %10.3f", r.lat_us.p50, r.lat_us.p99, r.lat_us.max);
  else
    std::printf("%10s %10s %10s", "-", "-", "-");
  std::printf(" %7llu\n", static_cast<unsigned long long>(r.wrong));
  std::fflush(stdout);
}

std::string transport_row_json(const TransportRow& r) {
  nlohmann::ordered_json j = {{"bench", "transport"},
                              {"op", r.op},
                              {"transport", r.transport},
                              {"rma_native", r.rma_native},
                              {"bytes", r.bytes},
                              {"iters", r.iters},
                              {"window", r.window},
                              {"span", r.span},
                              {"target_span", r.target_span},
                              {"seconds", r.seconds},
                              {"bw_MBps", r.bw_MBps()},
                              {"bw_MiBps", r.bw_MiBps()},
                              {"msg_per_s", r.msg_per_s()}};
  j["lat_p50_us"] = r.has_latency() ? nlohmann::ordered_json(r.lat_us.p50) : nullptr;
  j["lat_p99_us"] = r.has_latency() ? nlohmann::ordered_json(r.lat_us.p99) : nullptr;
  j["lat_max_us"] = r.has_latency() ? nlohmann::ordered_json(r.lat_us.max) : nullptr;
  j["lat_samples"] = r.lat_samples;
  j["wrong"] = r.wrong;
  return j.dump();
}

}  // namespace rdmaps::bench
