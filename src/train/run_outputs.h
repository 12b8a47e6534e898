// A run's outputs in --out (metrics.csv, summary.json, the curves and
// their gnuplot plot) and its table on stdout (docs/observability.md).
#pragma once

#include <string>
#include <vector>

#include "src/train/run_result.h"

namespace rdmaps::train {

/// Creates `dir` where it is missing and checks a file can be written there;
/// an Error names the path and the reason.
void check_writable(const std::string& dir);
/// Removes an earlier run's outputs from `dir`; one that cannot go is named.
void clear_earlier_outputs(const std::string& dir);
/// One run: its JSON object; --compare: an array of them, however many finished.
std::string json_of(const std::vector<RunResult>& runs, bool compare);
/// metrics.csv, summary.json, curve-N.csv and accuracy.gp, and accuracy.png
/// where gnuplot is installed; says what it wrote unless `json`.
void write_outputs(const std::string& dir, const std::vector<RunResult>& runs, bool json, bool compare);
/// The runs' table, on stdout.
void print_table(const std::vector<RunResult>& runs);

}  // namespace rdmaps::train
