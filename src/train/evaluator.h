// Test-set accuracy of the evaluating worker's parameters. In a worker
// process it runs on a thread of its own: a test pass inline would stop the
// worker's steps for its length, and under SSP or BSP every other worker
// waits with it, so the accuracy-over-time curve (and time to 85 %) would
// carry that stall (docs/architecture.md "Evaluation off the step").
// Virtual workers evaluate inline: their schedule, not the clock, decides
// what each evaluation sees.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "src/train/dataset.h"
#include "src/train/mlp.h"

namespace rdmaps::train {

/// One evaluation as its "eval" line carries it.
struct EvalLine {
  uint32_t worker = 0;
  double epoch = 0, accuracy = 0, loss = 0;
  uint64_t step = 0;
  double age_s = 0;  ///< from the snapshot to the line
  /// Virtual workers: when the snapshot was taken on the schedule's clock, in
  /// step times (virtual_workers.h); negative: not given (the line omits it).
  double virtual_time = -1;
};
std::string format_eval_line(const EvalLine& e);
/// nullopt unless `line` is an "eval" line.
std::optional<EvalLine> parse_eval_line(const std::string& line);

class Evaluator {
 public:
  /// `report` gets one "eval" line per snapshot, in the order taken; its
  /// age is what a reader subtracts to date the accuracy.
  Evaluator(uint32_t worker, const Dataset& test, size_t count, bool background,
            std::function<void(const std::string&)> report);
  ~Evaluator();
  Evaluator(const Evaluator&) = delete;
  Evaluator& operator=(const Evaluator&) = delete;

  /// Takes a copy of `params` (the worker goes on changing its own). On a
  /// thread of its own at most one copy waits: a newer one replaces it.
  void submit(std::span<const float> params, double epoch, uint64_t step, double virtual_time = -1);
  /// Returns once every snapshot taken is reported.
  void drain();
  /// The test loss of the last snapshot reported (0 before any).
  double last_loss() {
    std::lock_guard lock(mutex_);
    return last_loss_;
  }

 private:
  struct Snapshot {
    std::vector<float> params;
    double epoch = 0;
    uint64_t step = 0;
    std::chrono::steady_clock::time_point taken;
    double virtual_time = -1;
  };
  void evaluate(const Snapshot& s, std::span<const float> params);
  void loop();

  const uint32_t worker_;
  const Dataset& test_;
  const size_t count_;
  std::function<void(const std::string&)> report_;
  Mlp model_;  // its own scratch: the worker's model is busy with steps
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Snapshot> queue_;  // taken, not yet reported (at most 2); the front is being evaluated
  std::vector<float> spare_;    // an evaluated snapshot's buffer, reused
  double last_loss_ = 0;
  bool stop_ = false;
  std::thread thread_;  // last: started once the rest is built
};

}  // namespace rdmaps::train
