// rdmaps-train's flags: what the driver, server and worker roles are told,
// and the parameter-server configuration they share.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "rdmaps/config.h"
#include "src/train/dataset.h"

namespace rdmaps::train {

/// --straggler: slow steps, a worker process's by sleeping, a virtual
/// worker's by its ticks (virtual_workers.h); a slow step takes `factor`
/// times as long.
struct Straggler {
  int worker = -1;      ///< always this worker's steps; -1: none
  bool random = false;  ///< each step of each worker, with chance 1/workers
  double factor = 1;
  bool any() const { return worker >= 0 || random; }
  /// As --straggler takes it: "K:FACTOR" or "random:FACTOR", the factor
  /// exactly (std::to_string's 6 decimals sent 1.0000004 as 1.000000).
  std::string to_string() const {
    char text[32];
    std::snprintf(text, sizeof(text), "%.17g", factor);
    return (random ? std::string("random") : std::to_string(worker)) + ":" + text;
  }
};

struct Options {
  std::string role = "driver";
  uint32_t workers = 4, servers = 1, epochs = 15, batch = 64;
  /// Workers run as one process in a seeded schedule (virtual_workers.h); 0: one process each.
  uint32_t virtual_workers = 0;
  std::string delay = "round-robin";  ///< the virtual schedule (DelaySpec)
  std::string transport = "shm", data = kDefaultDataDir, out = "rdmaps-train-out";
  // Default: fully asynchronous with DC-ASGD-a (measured in docs/benchmarks.md).
  std::string staleness = "inf", dc = "adaptive";
  /// Each of --sync, --async and --staleness given, as its last use spelled it and the bound it set
  /// (a flag given twice keeps its last value): two that disagree are refused.
  struct ModeGiven {
    std::string flag, as_given, bound;
  };
  std::vector<ModeGiven> consistency_given;
  float lr = 0.1f, lambda = 0.04f, lambda0 = 32.0f;
  // Constant by default, as every table in docs/benchmarks.md was measured;
  // cosine lifts the default run by about 0.4 points (measured there too).
  std::string schedule = "constant";  ///< learning rate over the run: constant or cosine
  Straggler straggler;
  uint64_t seed = 42;
  bool json = false, compare = false;
  bool gpu_shard = false;       ///< servers keep their range on the GPU (ServerOptions::gpu_shard)
  bool insecure = false;        ///< --role server: serve off loopback without a secret (ServerOptions::insecure)
  double expect_accuracy = -1;  ///< exit non-zero below this final accuracy
  size_t train_limit = 0, test_limit = 0;
  uint32_t evals_per_epoch = 2;        ///< test passes per epoch (worker 0's)
  bool evals_per_epoch_given = false;  ///< asked for: more than an epoch's steps is refused, not capped
  /// The parameter-server flags given, on the command line or by their
  /// RDMAPS_* variables, as --name=value: every process of the job gets them.
  std::vector<std::string> config_args;
  std::vector<std::string> summary_flags;  ///< given flags only a local run reads (--out, --json, --label, --compare)
  // Cluster roles.
  std::string listen = "0.0.0.0:13337", servers_list;
  uint32_t index = 0, worker = 0;
  int report_fd = -1;
  bool launch_timeout_given = false;
  // Under a launcher (mpirun, srun, torchrun): the roles come from the ranks.
  bool role_given = false, workers_given = false, servers_given = false, transport_given = false;
  double launch_timeout_s = 120;  ///< bound on the address exchange of a launched job
  std::string label;
  /// HOST:PORT for GET /metrics. A role serves there; the local run gives
  /// server i PORT+i and worker j PORT+servers+j (virtual workers: none).
  std::string metrics;
};

/// Throws Error(kInvalidArgument) naming the flag (or variable) and what is
/// wrong with it; --help prints the flags and exits.
Options parse_options(int argc, char** argv);
[[noreturn]] void bad_flag(const std::string& flag, const std::string& why);
/// --straggler K names a worker of the job: checked once the worker count is
/// final (under a launcher, the launch's, not --workers' default).
void check_straggler(const Options& o);

/// The parameter-server configuration every process of the job uses.
Config config_of(const Options& o);
/// Flags that give a child process the same job. A virtual run's servers are
/// fully asynchronous: its schedule applies the staleness bound.
std::vector<std::string> passthrough(const Options& o, bool server = false);
/// --metrics for the local run's process at `offset` (servers first, then workers): HOST:PORT+offset.
std::string metrics_address_for(const Options& o, uint32_t offset);
/// "async DC-a", "BSP", "SSP s=3", ... (with "virtual N" in front for that mode).
std::string default_label(const Options& o);

}  // namespace rdmaps::train
