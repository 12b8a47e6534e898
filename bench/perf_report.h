// Result rows of rdmaps-perf: a table for people, one JSON object per line
// for scripts. Every unit is in the field name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rdmaps::bench {

/// Nearest-rank percentiles: p50 and p99 are the ceil(q*n)-th smallest sample.
struct Percentiles {
  double p50 = 0, p99 = 0, max = 0;
  static Percentiles of(std::vector<double> samples);
};

struct TransportRow {
  std::string op;
  std::string transport;
  bool rma_native = false;
  size_t bytes = 0;
  uint64_t iters = 0;
  uint64_t window = 0;       // operations in flight in the bandwidth phase
  uint64_t span = 0;         // source bytes the bandwidth phase walks through (its message size: one buffer)
  uint64_t target_span = 0;  // target bytes it walks through
  double seconds = 0;        // bandwidth phase, timed alone
  Percentiles lat_us;        // latency phase (half round trip for put/am ping-pong, full op for get)
  uint64_t lat_samples = 0;  // behind lat_us: --lat-iters, at most iters (p99 of 8 samples is their maximum)
  uint64_t wrong = 0;        // bytes that did not arrive as sent
  double bw_MBps() const { return bytes * iters / seconds / 1e6; }
  double bw_MiBps() const { return bytes * iters / seconds / (1024.0 * 1024.0); }
  double msg_per_s() const { return iters / seconds; }
  bool has_latency() const { return lat_samples > 0; }  // false where the run skipped it (--lat-iters 0)
};

void print_transport_header(const std::string& config_lines);
void print_transport_row(const TransportRow& row);
std::string transport_row_json(const TransportRow& row);

}  // namespace rdmaps::bench
