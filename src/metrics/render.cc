#include "src/metrics/render.h"

#include <cmath>

#include "src/metrics/exposition.h"

namespace rdmaps::metrics {
namespace {

using Samples = std::vector<Exposition::Sample>;

Samples by_worker(const std::vector<uint64_t>& values) {
  Samples out;
  for (size_t w = 0; w < values.size(); ++w) out.push_back({{{"worker", std::to_string(w)}}, double(values[w])});
  return out;
}

// DurationHistogram as seconds: bucket k is at most 2^k microseconds, the last open.
void durations(Exposition& e, const std::string& name, const std::string& help, const DurationHistogram& h) {
  std::vector<double> bounds;
  for (size_t k = 0; k + 1 < h.counts.size(); ++k) bounds.push_back(std::ldexp(1e-6, static_cast<int>(k)));
  e.histogram(name, help, bounds, h.counts, static_cast<double>(h.sum_ns) / 1e9);
}

}  // namespace

const std::vector<double>& staleness_bounds() {
  // Fine where staleness usually is, coarse beyond; larger taus (the server
  // counts them exactly to 4095, then together) all go to +Inf.
  static const std::vector<double> bounds = {0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 255};
  return bounds;
}

std::string render_server_metrics(const ServerStats& s, const ServerOptions& o) {
  Exposition e;
  e.family("rdmaps_server_info", "This server: its index among the servers and the update rule it applies.", "gauge",
           {{{{"index", std::to_string(o.index)},
              {"servers", std::to_string(o.servers)},
              {"rule", s.rule.empty() ? "none" : s.rule}},
             1}});
  e.family("rdmaps_pushes_total", "Pushes (pieces of a gradient, one per shard) applied, by worker.", "counter",
           by_worker(s.applied_per_worker));
  e.family("rdmaps_push_bytes_total", "Gradient bytes applied, by worker (bf16 pushes count 2 bytes a value).",
           "counter", by_worker(s.bytes_in_per_worker));
  // No rule label: the series changed from rule="none" to the rule at the first worker, and
  // increase() lost the first sample's updates (the rule is rdmaps_server_info's).
  e.counter("rdmaps_updates_applied_total", "Updates applied with the server's rule.", double(s.pushes));
  e.counter("rdmaps_pushes_dropped_total", "Pushes dropped by the staleness policy (--staleness-policy drop).",
            double(s.dropped));
  e.counter(
      "rdmaps_pulls_total",
      "Pull requests served (one per server thread a worker's pull asks, its refetch after a reconnect included).",
      double(s.pulls));
  e.counter("rdmaps_pull_bytes_total", "Parameter bytes written back to workers.", double(s.bytes_out));
  e.counter("rdmaps_clocks_total", "Clock steps of the workers (one per clock() call of each).", double(s.clocks));
  // Per-tau counts folded into the coarser buckets.
  const auto& bounds = staleness_bounds();
  std::vector<uint64_t> counts(bounds.size() + 1, 0);
  size_t bucket = 0;
  for (size_t tau = 0; tau < s.staleness.size(); ++tau) {
    while (bucket < bounds.size() && static_cast<double>(tau) > bounds[bucket]) ++bucket;
    counts[bucket] += s.staleness[tau];
  }
  e.histogram("rdmaps_staleness", "Staleness (tau: updates applied since the worker's copy) of each applied push.",
              bounds, counts, double(s.staleness_sum));
  e.gauge("rdmaps_ssp_clock_min",
          "Slowest worker's clock (SSP): a live one, or one not connected yet (0, or its checkpointed clock after a "
          "resume).",
          double(s.min_clock));
  e.gauge("rdmaps_ssp_clock_max", "Fastest worker's clock (SSP), of the workers the minimum counts.",
          double(s.max_clock));
  e.gauge("rdmaps_ssp_clock_lag",
          "Fastest minus slowest worker's clock (the gauges above): how far SSP lets them drift.",
          double(s.max_clock >= s.min_clock ? s.max_clock - s.min_clock : 0));
  e.gauge("rdmaps_workers", "Workers the job has (--workers).", double(o.workers));
  e.gauge("rdmaps_workers_connected", "Workers connected now.", double(s.workers_connected));
  e.counter("rdmaps_workers_left_total", "Worker connections that ended with the worker's goodbye.",
            double(s.workers_left));
  e.counter("rdmaps_workers_lost_total", "Worker connections that closed or failed without a goodbye.",
            double(s.workers_lost));
  Samples rejected;
  for (const auto& [reason, n] : s.rejected_by_reason) rejected.push_back({{{"reason", reason}}, double(n)});
  e.family("rdmaps_rejected_total",
           "Messages rejected, by reason: sequence (doorbell out of order), header (malformed slot header), "
           "non-finite (NaN or Inf with --check-nan), landing (bad active message).",
           "counter", rejected);
  durations(e, "rdmaps_apply_seconds", "Time to apply one push piece to the parameters.", s.apply_latency);
  durations(e, "rdmaps_write_back_seconds", "Time to copy and put one pull's fresh parameters.", s.write_back_latency);
  e.gauge("rdmaps_lanes", "Server threads serving the data path (0 before the first worker).", double(s.lanes));
  e.gauge("rdmaps_gpu_shard", "1 if this server keeps its range in GPU memory (--gpu-shard).", o.gpu_shard ? 1 : 0);
  e.counter("rdmaps_stall_warnings_total", "Workers logged for not advancing the slowest clock.",
            double(s.stall_warnings));
  e.gauge("rdmaps_longest_setup_pause_seconds", "Longest a server thread spent admitting connections.",
          double(s.longest_setup_pause_us) / 1e6);
  e.counter("rdmaps_checkpoints_total", "Checkpoints written.", double(s.checkpoints));
  e.counter("rdmaps_checkpoint_failures_total", "Checkpoints that could not be written.",
            double(s.checkpoint_failures));
  e.gauge("rdmaps_checkpoint_updates", "Pushes held by the newest checkpoint written.", double(s.checkpoint_updates));
  e.gauge("rdmaps_resumed_updates", "Pushes held by the checkpoint this server resumed from (0: started empty).",
          double(s.resumed_updates));
  return e.text();
}

std::string render_worker_metrics(const ClientStats& s, uint32_t worker, uint64_t clock) {
  Exposition e;
  const Labels w = {{"worker", std::to_string(worker)}};
  auto counter = [&](const char* name, const char* help, double v) { e.family(name, help, "counter", {{w, v}}); };
  auto gauge = [&](const char* name, const char* help, double v) { e.family(name, help, "gauge", {{w, v}}); };
  e.family("rdmaps_worker_info", "This worker and its GPU path (none, direct or staged).", "gauge",
           {{{{"worker", std::to_string(worker)}, {"gpu_path", s.gpu_path}}, 1}});
  // A worker still connecting served zeros like one at step 0.
  gauge("rdmaps_worker_servers_joined", "Servers this worker joined: 0 while it connects.",
        double(s.push_paths.size()));
  counter("rdmaps_worker_pushes_total",
          "Push messages sent or lost (one per shard a push touches; adjoining small tensors gathered into one count "
          "once; minus rdmaps_worker_pushes_lost_total: what the servers hold).",
          double(s.pushes));
  counter("rdmaps_worker_push_bytes_total", "Gradient bytes pushed.", double(s.push_bytes));
  counter("rdmaps_worker_pulls_total", "Pull requests sent (one per server thread a pull() asks).", double(s.pulls));
  counter("rdmaps_worker_pull_bytes_total", "Parameter bytes pulled.", double(s.pull_bytes));
  counter("rdmaps_worker_pull_skips_total", "Pulls answered from the cached copy (SSP with --skip-pulls).",
          double(s.pulls_skipped));
  counter("rdmaps_worker_pull_bytes_saved_total", "Bytes the skipped pulls did not fetch.", double(s.pull_bytes_saved));
  counter("rdmaps_worker_pull_bytes_in_place_total",
          "Pulled bytes that landed straight in registered memory (Client::register_memory).",
          double(s.pull_bytes_in_place));
  counter("rdmaps_worker_reconnects_total",
          "Reconnections to a server (--reconnect): it restarted, or the connection dropped.", double(s.reconnects));
  counter("rdmaps_worker_pushes_lost_total", "Push pieces restarted servers lost.", double(s.pushes_lost));
  counter("rdmaps_worker_clocks_total", "clock() and barrier() calls (each a clock step).", double(s.clocks));
  gauge("rdmaps_worker_clock", "This worker's SSP clock.", double(clock));
  counter("rdmaps_worker_clock_wait_seconds_total", "Time clock() and barrier() waited for slower workers.",
          s.clock_wait_seconds);
  gauge("rdmaps_worker_step_seconds", "Time between this worker's two latest clock() calls (one training step).",
        s.last_step_seconds);
  return e.text();
}

}  // namespace rdmaps::metrics
