#include "src/ps/server_report.h"

#include <algorithm>
#include <cstdio>

namespace rdmaps::ps {

std::string interval_report(const ServerStats& now, const ServerStats& last, double seconds, size_t lanes) {
  // The interval's pushes only: quantiles since the start barely move once a
  // straggler appears late in a run.
  ServerStats recent;
  recent.staleness = now.staleness;
  if (last.staleness.size() == recent.staleness.size())
    for (size_t i = 0; i < recent.staleness.size(); ++i) recent.staleness[i] -= last.staleness[i];
  // No push in the interval: no staleness to tell ("p50 0" read as fresh updates, in a stall).
  const bool none = std::all_of(recent.staleness.begin(), recent.staleness.end(), [](uint64_t n) { return n == 0; });
  const auto quantile = [&](double q) { return none ? std::string("-") : recent.staleness_quantile_text(q); };
  char line[512];
  std::snprintf(line, sizeof(line),
                "rdmaps-server: %.0f pushes/s, in %.3f GB/s, out %.3f GB/s, staleness p50 %s p99 %s, dropped %llu, "
                "rejected %llu in the last %.1f s; since the start: staleness max %llu, longest set-up pause %.1f "
                "ms; min clock %llu, %zu lanes",
                static_cast<double>(now.pushes - last.pushes) / seconds,
                static_cast<double>(now.bytes_in - last.bytes_in) / seconds / 1e9,
                static_cast<double>(now.bytes_out - last.bytes_out) / seconds / 1e9, quantile(0.5).c_str(),
                quantile(0.99).c_str(), static_cast<unsigned long long>(now.dropped - last.dropped),
                static_cast<unsigned long long>(now.rejected - last.rejected), seconds,
                static_cast<unsigned long long>(now.staleness_max), now.longest_setup_pause_us / 1e3,
                static_cast<unsigned long long>(now.min_clock), lanes);
  return line;
}

}  // namespace rdmaps::ps
