// rdmaps-train's driver: starts the servers and workers of a job as local
// processes, follows their reports, and writes the summary, metrics.csv and
// the accuracy plot.
#pragma once

#include "src/train/options.h"

namespace rdmaps::train {

/// Runs the job (or, with --compare, each variant in turn); returns the exit status.
int run_driver(const Options& o);

}  // namespace rdmaps::train
