// One training worker: its partition of the training set, minibatch SGD
// steps through the parameter servers, periodic test evaluation. A worker
// process runs one (run_worker); the virtual-worker mode runs many in one
// process, stepping them in a schedule (virtual_workers.h).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "rdmaps/client.h"
#include "rdmaps/error.h"
#include "src/train/dataset.h"
#include "src/train/evaluator.h"
#include "src/train/mlp.h"

namespace rdmaps::train {

/// Examples a run uses of those `set` holds: the first `limit` (0: all); a
/// limit past them is refused, naming `flag` (it trained and tested on fewer,
/// without a word).
inline size_t examples_used(const char* flag, size_t limit, const Dataset& set) {
  if (limit > set.count)
    throw Error(Errc::kInvalidArgument, std::string(flag) + " " + std::to_string(limit) + ": " + set.images_path +
                                            " holds " + std::to_string(set.count) +
                                            " examples; give at most that, or 0 for all of them");
  return limit ? limit : set.count;
}

struct WorkerOptions {
  uint32_t worker = 0, workers = 1;
  uint32_t epochs = 8;
  uint32_t batch = 64;
  uint64_t seed = 1;
  double straggle = 1.0;         ///< sleep (straggle - 1) x compute time between a step's gradient and its push
  double straggle_chance = 1.0;  ///< chance that a step has that sleep (1: every step)
  bool evaluate = false;         ///< this worker measures test accuracy
  bool evaluate_aside = false;   ///< on a thread of its own, while it steps on (evaluator.h)
  uint32_t evals_per_epoch = 2;
  bool evals_per_epoch_given = false;      ///< asked for: more than an epoch's steps is refused
  size_t train_limit = 0, test_limit = 0;  ///< use only the first N examples (0 = all)
  float lr = 0.1f;                         ///< base learning rate (the servers' unless cosine)
  bool cosine = false;                     ///< decay lr to 5 % over the run; pushes carry the rate
  bool say_metrics = false;                ///< print where its metrics are served (no driver does)
};

/// Lines for the driver, each naming the worker: "progress W ...", "eval W ...", "done W ...".
using Report = std::function<void(const std::string& line)>;

class TrainingWorker {
 public:
  TrainingWorker(const ClientOptions& client, const WorkerOptions& options, const TrainTest& data, Report report);
  ~TrainingWorker();
  TrainingWorker(const TrainingWorker&) = delete;
  TrainingWorker& operator=(const TrainingWorker&) = delete;

  /// Connects to the servers; worker 0 also sets the initial weights and
  /// pulls them back, so they are in place before anyone's first pull,
  /// unless the servers hold a model already (resumed, or trained before a
  /// restarted worker 0 joined).
  void connect();
  /// Waits until every worker reached this clock (real processes: all
  /// connected at the start, all took their last step at the end; a virtual
  /// schedule has all its workers connected before any steps).
  void barrier() { client_.barrier(); }
  /// Pulls the parameters of the first step; worker 0 evaluates them.
  void begin();
  bool finished() const { return step_ >= total_steps_; }
  /// One step: the gradient of the next minibatch at the parameters held,
  /// (straggle), push, clock, then pull the next step's parameters (none
  /// after the last step). Throws
  /// Error when the loss is not finite (pushing it would ruin every worker).
  void step() {
    push_step();
    pull_next();
  }
  /// step()'s first half: up to the clock. A virtual schedule that holds a
  /// worker at its staleness bound calls pull_next() when it lets it go.
  void push_step();
  /// step()'s second half: the next step's parameters (worker 0 evaluates
  /// them at its evaluation points); nothing after the last step.
  void pull_next();
  /// Virtual workers: the schedule's time, in step times, that the next
  /// evaluation is dated at.
  void set_virtual_time(double t) { virtual_time_ = t; }
  /// Returns once the servers applied every push of this worker: a pull
  /// queued behind them (a step pulls after its push, except the last one).
  /// The schedule's wait, not training: the reported pulls leave it out.
  void settle();
  /// Worker 0 tests the parameters the servers hold: called once every
  /// worker's last push is in, it reports the final model's accuracy.
  void final_evaluation();
  /// Reports the "done" line.
  void finish();

  uint64_t steps() const { return step_; }
  const Client& client() const { return client_; }

 private:
  /// The client's counters less settle()'s pulls.
  ClientStats reported_stats() const;
  /// Throws the error of a run whose loss is not finite: `what` says which.
  [[noreturn]] void diverged(const char* what) const;
  void load_batch();
  void evaluate(double epoch);
  double epoch_progress() const;
  size_t done_in_epoch() const { return (step_ - 1) % steps_per_epoch_ + 1; }  // steps, the last one included
  bool evaluation_due() const;

  WorkerOptions o_;
  const TrainTest& data_;
  Report report_;
  std::vector<float> params_;  // registered with client_, so it outlives it
  Client client_;
  Mlp model_;
  std::vector<size_t> mine_;  // this worker's examples, reshuffled every epoch
  std::vector<float> grad_, x_;
  std::vector<uint8_t> y_;
  std::mt19937_64 rng_, straggle_rng_;
  std::bernoulli_distribution straggles_;
  size_t test_n_ = 0, steps_per_epoch_ = 0;
  size_t progress_every_ = 50;  ///< steps between `progress` lines
  uint64_t step_ = 0, total_steps_ = 0, straggled_ = 0;
  ClientStats settling_;                  // pulls and bytes of settle(), left out of what is reported
  double loss_sum_ = 0, compute_s_ = 0;   // loss_sum_: this epoch's
  double virtual_time_ = -1;              // negative: not a virtual worker
  std::mutex report_mutex_;               // the evaluator reports from its thread
  std::unique_ptr<Evaluator> evaluator_;  // the evaluating worker's
};

/// A worker process: connect, barrier, every step, done.
void run_worker(const ClientOptions& client, const WorkerOptions& options, const TrainTest& data, const Report& report);

}  // namespace rdmaps::train
