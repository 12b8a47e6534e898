// What a local run of rdmaps-train gathers from its children's lines: the
// test accuracy curve, the servers' staleness figures and the workers'
// totals. The driver fills it (driver.cc); run_outputs.h writes it.
#pragma once

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "rdmaps/error.h"

namespace rdmaps::train {

struct Point {
  double seconds, epoch, accuracy, loss;
  uint64_t updates;
  double virtual_time;  ///< virtual workers: on the schedule's clock, in step times; else -1
};

// Count by staleness. A server counts taus from its histogram's last bucket
// on together (">=4096" on its line): `beyond` holds those, `from` that bound.
struct Histogram {
  std::vector<uint64_t> exact;
  uint64_t beyond = 0, from = 0;
};

// What a server's latest "stats" line said; each line holds its totals so far.
struct ServerFigures {
  uint64_t applied = 0, dropped = 0, tau_max = 0;  // applied, dropped: pieces (one per shard a push covers)
  uint64_t resumed = 0;                            // pieces the checkpoint it resumed from held; 0: it started empty
  std::string tau_p50 = "0";
  int stopped_by = 0;  // the signal that stopped it (SIGTERM: its exit status is 0 all the same)
};

struct RunResult {
  std::string label;
  // What failed the run once it had trained (a final checkpoint not written):
  // its figures are kept, and written, before the run fails.
  std::string failure;
  Errc failure_kind = Errc::kPeerGone;  ///< the failed child's own error's kind, where it said it
  int interrupted_by = 0;               ///< the signal (SIGINT, SIGTERM) that ended it before its end, else 0
  uint32_t virtual_workers = 0;
  std::string delay;
  double seconds = 0, final_accuracy = 0;
  std::optional<double> time_to_85;
  /// Virtual workers: the schedule's clock at the end and at 85 %, in step
  /// times (a worker's step at full speed), as a core per worker would take them.
  double virtual_time = 0;
  std::optional<double> virtual_time_to_85;
  uint64_t steps = 0;                 ///< every worker's steps
  uint64_t updates = 0, dropped = 0;  ///< steps the servers applied, and dropped (--staleness-policy drop)
  uint64_t pushed = 0, pulled = 0, pulls = 0, skipped = 0;
  uint64_t straggled = 0;                    ///< steps in which a worker slept before its push (--straggler)
  uint64_t reconnects = 0, pushes_lost = 0;  ///< servers that restarted (--reconnect) and what they lost
  std::string tau_p50 = "0";                 ///< ">=N" where it falls in the servers' last bucket
  uint64_t tau_max = 0;                      ///< exact
  std::vector<ServerFigures> servers;
  Histogram staleness;           ///< per push piece, summed over servers
  Histogram schedule_staleness;  ///< virtual workers: what the schedule made, per piece
  std::vector<Point> curve;
};

/// "tau:count tau:count ... >=N:count" after a line's first word, added into `into`.
void add_histogram(std::istringstream& in, Histogram& into);
/// The q-quantile as text: "7", or ">=4096" where it falls among the taus counted together.
std::string quantile_text(const Histogram& h, double q);

}  // namespace rdmaps::train
