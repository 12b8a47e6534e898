// Counters as dicts (stats.h).
#include "python/ext/stats.h"

#include <pybind11/stl.h>

namespace py = pybind11;

namespace rdmaps::python {

py::dict client_stats_dict(const ClientStats& s, uint64_t messages_rejected) {
  py::dict d;
  d["pushes"] = s.pushes;
  d["push_bytes"] = s.push_bytes;
  d["pulls"] = s.pulls;
  d["pull_bytes"] = s.pull_bytes;
  d["pulls_skipped"] = s.pulls_skipped;
  d["pull_bytes_saved"] = s.pull_bytes_saved;
  d["pull_bytes_in_place"] = s.pull_bytes_in_place;
  d["clocks"] = s.clocks;
  d["clock_wait_seconds"] = s.clock_wait_seconds;
  d["push_paths"] = s.push_paths;
  d["reconnects"] = s.reconnects;
  d["pushes_lost"] = s.pushes_lost;
  d["messages_rejected"] = messages_rejected;  // pushes (and other messages) the servers refused
  d["last_step_seconds"] = s.last_step_seconds;
  d["gpu_path"] = s.gpu_path;
  d["servers_resumed"] = s.servers_resumed;
  d["servers_holding"] = s.servers_holding;
  return d;
}

py::dict server_stats_dict(const ServerStats& s) {
  py::dict d;
  d["pushes"] = s.pushes;
  d["bytes_in"] = s.bytes_in;
  d["bytes_out"] = s.bytes_out;
  d["pulls"] = s.pulls;
  d["clocks"] = s.clocks;
  d["rejected"] = s.rejected;
  d["dropped"] = s.dropped;
  d["min_clock"] = s.min_clock;
  d["workers_left"] = s.workers_left;
  d["workers_lost"] = s.workers_lost;
  d["lanes"] = s.lanes;
  d["longest_setup_pause_us"] = s.longest_setup_pause_us;
  d["checkpoints"] = s.checkpoints;
  d["checkpoint_updates"] = s.checkpoint_updates;
  d["final_checkpoint_failed"] = s.final_checkpoint_failed;
  d["resumed_updates"] = s.resumed_updates;
  d["applied_per_worker"] = s.applied_per_worker;
  d["rejected_per_worker"] = s.rejected_per_worker;
  d["bytes_in_per_worker"] = s.bytes_in_per_worker;
  d["staleness"] = s.staleness;
  d["staleness_sum"] = s.staleness_sum;
  d["staleness_max"] = s.staleness_max;
  d["staleness_p50"] = s.staleness_quantile(0.5);
  d["staleness_p99"] = s.staleness_quantile(0.99);
  d["max_clock"] = s.max_clock;
  d["workers_connected"] = s.workers_connected;
  py::dict reasons;
  for (const auto& [reason, count] : s.rejected_by_reason) reasons[py::str(reason)] = count;
  d["rejected_by_reason"] = reasons;
  d["rule"] = s.rule;
  d["stall_warnings"] = s.stall_warnings;
  d["checkpoint_failures"] = s.checkpoint_failures;
  return d;
}

}  // namespace rdmaps::python
