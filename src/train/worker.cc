#include "src/train/worker.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <thread>

#include "rdmaps/error.h"
#include "rdmaps/log.h"

namespace rdmaps::train {

using Clock = std::chrono::steady_clock;

TrainingWorker::TrainingWorker(const ClientOptions& client, const WorkerOptions& o, const TrainTest& data,
                               Report report)
    : o_(o),
      data_(data),
      report_([this, inner = std::move(report)](const std::string& line) {
        std::lock_guard lock(report_mutex_);
        inner(line);
      }),
      params_(Mlp::kParams),
      client_(client),
      grad_(Mlp::kParams),
      rng_(o.seed * 7919 + o.worker),
      // Its own stream, so straggling does not change which examples a worker sees.
      straggle_rng_(o.seed * 104729 + o.worker),
      straggles_(std::clamp(o.straggle_chance, 0.0, 1.0)) {
  const size_t train_n = examples_used("--train-limit", o.train_limit, data.train);
  test_n_ = examples_used("--test-limit", o.test_limit, data.test);
  // This worker's partition of one fixed shuffle of the training set.
  std::vector<size_t> order(train_n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(o.seed));
  const size_t per = train_n / o.workers;
  mine_.assign(order.begin() + o.worker * per, order.begin() + (o.worker + 1) * per);
  steps_per_epoch_ = mine_.size() / o.batch;
  if (steps_per_epoch_ == 0)
    throw Error(Errc::kInvalidArgument, "worker " + std::to_string(o.worker) + " gets " + std::to_string(mine_.size()) +
                                            " training examples, less than one batch of " + std::to_string(o.batch) +
                                            ": lower --workers or --batch, or raise --train-limit");
  // It tests after a step: more asked for than steps gave fewer, without a word.
  if (o.evaluate && o.evals_per_epoch_given && o.evals_per_epoch > steps_per_epoch_)
    throw Error(Errc::kInvalidArgument,
                "--evals-per-epoch " + std::to_string(o.evals_per_epoch) + ": worker " + std::to_string(o.worker) +
                    " takes " + std::to_string(steps_per_epoch_) + " steps an epoch (" + std::to_string(mine_.size()) +
                    " training examples in batches of " + std::to_string(o.batch) +
                    ") and tests after a step: give at most " + std::to_string(steps_per_epoch_));
  // Sized once a batch is known to fit: --batch 4294967295 asked for 13 TB.
  x_.resize(size_t{o.batch} * Mlp::kIn);
  y_.resize(o.batch);
  total_steps_ = uint64_t{o.epochs} * steps_per_epoch_;
  // Every 50 steps, but at least 4 times an epoch: with many workers each
  // takes fewer than 50 steps an epoch, and the driver's progress line saw none.
  progress_every_ = std::clamp<size_t>(steps_per_epoch_ / 4, 1, 50);
  if (o.evaluate) evaluator_ = std::make_unique<Evaluator>(o.worker, data.test, test_n_, o.evaluate_aside, report_);
  client_.declare("mlp", Mlp::kParams);
  client_.register_memory(params_);  // pulls land in place over tcp
}

TrainingWorker::~TrainingWorker() = default;

void TrainingWorker::connect() {
  // The real port where --metrics gave 0; said before the connect, which may
  // wait for the servers for minutes while the endpoint serves.
  if (o_.say_metrics && !client_.metrics_address().empty())
    std::fprintf(stderr, "rdmaps-train worker %u: metrics at http://%s/metrics\n", o_.worker,
                 client_.metrics_address().c_str());
  client_.connect();
  // Servers that resumed from a checkpoint, or that trained before this
  // worker 0 joined (a restarted process), hold the model: keep it. A
  // restarted worker 0 set its initial weights over the model in training.
  if (o_.worker != 0) return;
  if (const uint32_t holding = client_.stats().servers_holding; holding > 0) {
    // Said: a server kept running from an earlier run (--keep-running) holds that run's model too.
    logf(LogLevel::kInfo,
         "rdmaps-train worker 0: %u server(s) hold a model (resumed from a checkpoint, or trained before this "
         "worker joined): training goes on from it, no initial weights set",
         holding);
    return;
  }
  Mlp::init(params_, o_.seed);
  client_.init("mlp", params_);
  client_.pull("mlp", params_);  // taken in after the init: the same inbox is served in order
}

void TrainingWorker::begin() {
  client_.pull("mlp", params_);
  if (o_.evaluate) evaluate(0);
}

void TrainingWorker::settle() {
  // Counted, a virtual BSP run reported 1.74x the pulls and bytes of the
  // same run in processes (docs/observability.md, `pulls`).
  const ClientStats before = client_.stats();
  client_.pull("mlp", params_);
  const ClientStats after = client_.stats();
  settling_.pulls += after.pulls - before.pulls;
  settling_.pull_bytes += after.pull_bytes - before.pull_bytes;
  settling_.pulls_skipped += after.pulls_skipped - before.pulls_skipped;
}

ClientStats TrainingWorker::reported_stats() const {
  ClientStats s = client_.stats();
  s.pulls -= settling_.pulls;
  s.pull_bytes -= settling_.pull_bytes;
  s.pulls_skipped -= settling_.pulls_skipped;
  return s;
}

double TrainingWorker::epoch_progress() const { return static_cast<double>(step_) / steps_per_epoch_; }

void TrainingWorker::load_batch() {
  const size_t b = step_ % steps_per_epoch_;
  if (b == 0) std::shuffle(mine_.begin(), mine_.end(), rng_);
  for (size_t i = 0; i < o_.batch; ++i) {
    size_t idx = mine_[b * o_.batch + i];
    std::copy_n(data_.train.images.data() + idx * Mlp::kIn, Mlp::kIn, x_.data() + i * Mlp::kIn);
    y_[i] = data_.train.labels[idx];
  }
}

// The bench scripts recognise a diverged run by "training diverged".
void TrainingWorker::diverged(const char* what) const {
  throw Error(Errc::kInvalidArgument,
              "worker " + std::to_string(o_.worker) + ": " + what + ": training diverged; lower --lr or --lambda0");
}

void TrainingWorker::push_step() {
  load_batch();
  if (step_ % steps_per_epoch_ == 0) loss_sum_ = 0;
  if (o_.cosine) {  // this worker's progress through its own steps
    const double progress = static_cast<double>(step_) / static_cast<double>(total_steps_);
    client_.set_learning_rate(static_cast<float>(o_.lr * (0.05 + 0.95 * 0.5 * (1 + std::cos(M_PI * progress)))));
  }
  auto t0 = Clock::now();
  const double loss = model_.loss_and_gradient(params_, x_.data(), y_.data(), o_.batch, grad_);
  if (!std::isfinite(loss)) {
    char what[80];
    std::snprintf(what, sizeof(what), "the loss is %g at step %llu (epoch %.2f)", loss,
                  static_cast<unsigned long long>(step_), epoch_progress());
    diverged(what);
  }
  const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
  compute_s_ += dt;
  loss_sum_ += loss;
  // A slow step is slow between its pull and its push, as a slow node's is:
  // the others' updates meanwhile make its gradient stale. Slept after the
  // push (before the next pull), its gradients were as fresh as the others'
  // (max staleness 7 among 4 workers where a 4x straggler's is about 12, as
  // the virtual schedule has it).
  if (o_.straggle > 1.0 && straggles_(straggle_rng_)) {
    ++straggled_;
    std::this_thread::sleep_for(std::chrono::duration<double>((o_.straggle - 1.0) * dt));
  }
  client_.push("mlp", grad_);
  client_.clock();
  ++step_;
  const size_t done = done_in_epoch();
  if (done % progress_every_ == 0) {
    auto stats = reported_stats();
    char line[192];
    std::snprintf(line, sizeof(line), "progress %u %llu %.4f %.5f %llu %llu", o_.worker,
                  static_cast<unsigned long long>(step_), epoch_progress(), loss_sum_ / done,
                  static_cast<unsigned long long>(stats.push_bytes), static_cast<unsigned long long>(stats.pull_bytes));
    report_(line);
  }
}

void TrainingWorker::pull_next() {
  if (finished()) return;  // the last evaluation is of the final model (final_evaluation())
  if (o_.evaluate && evaluation_due())
    evaluate(epoch_progress());  // pulls: the next step computes on what was evaluated
  else
    client_.pull("mlp", params_);
}

// The k-th of an epoch's N evaluations after its step ceil(k * steps / N):
// N of them, the last at the epoch's end (every steps / N steps gave five
// for four at 10 steps an epoch, and none at the end of a 117-step epoch for two).
bool TrainingWorker::evaluation_due() const {
  const uint64_t n = std::max(1u, o_.evals_per_epoch), done = done_in_epoch();
  return done * n / steps_per_epoch_ != (done - 1) * n / steps_per_epoch_;
}

void TrainingWorker::final_evaluation() {
  // With --skip-pulls its copy may be within the bound yet lack the last
  // pushes (its own too): the virtual schedule has no barrier to expire it.
  client_.expire_cache();
  if (o_.evaluate) evaluate(epoch_progress());
}

void TrainingWorker::evaluate(double epoch) {
  client_.pull("mlp", params_);
  evaluator_->submit(params_, epoch, step_, virtual_time_);
}

void TrainingWorker::finish() {
  if (evaluator_) {
    evaluator_->drain();  // the last accuracy comes before "done"
    // The last push may take the model past what floats hold after every
    // training loss was finite: its chance accuracy (argmax over NaN) was
    // reported, and passed --expect-accuracy 0.05.
    if (const double loss = evaluator_->last_loss(); !std::isfinite(loss)) {
      char what[80];
      std::snprintf(what, sizeof(what), "the final model's test loss is %g after step %llu", loss,
                    static_cast<unsigned long long>(step_));
      diverged(what);
    }
  }
  auto s = reported_stats();
  char line[256];
  std::snprintf(line, sizeof(line), "done %u %llu %llu %llu %llu %llu %.4f %llu %llu %llu %llu %.4f", o_.worker,
                static_cast<unsigned long long>(step_), static_cast<unsigned long long>(s.push_bytes),
                static_cast<unsigned long long>(s.pull_bytes), static_cast<unsigned long long>(s.pulls),
                static_cast<unsigned long long>(s.pulls_skipped), compute_s_,
                static_cast<unsigned long long>(straggled_), static_cast<unsigned long long>(s.pushes),
                static_cast<unsigned long long>(s.reconnects), static_cast<unsigned long long>(s.pushes_lost),
                s.clock_wait_seconds);
  report_(line);
}

void run_worker(const ClientOptions& client, const WorkerOptions& options, const TrainTest& data,
                const Report& report) {
  TrainingWorker worker(client, options, data, report);
  worker.connect();
  worker.barrier();  // everyone starts from worker 0's initial weights
  worker.begin();
  while (!worker.finished()) worker.step();
  // Every worker's pushes are in once all reached this clock: the final
  // accuracy is the final model's, whoever finished first.
  worker.barrier();
  worker.final_evaluation();
  worker.finish();
}

}  // namespace rdmaps::train
