#include "src/train/evaluator.h"

#include <cstdio>

namespace rdmaps::train {

// Loss to 17 digits: two runs of a deterministic schedule compare bit for bit.
std::string format_eval_line(const EvalLine& e) {
  char line[224];
  const int n = std::snprintf(line, sizeof(line), "eval %u %.4f %.6f %.17g %llu %.6f", e.worker, e.epoch, e.accuracy,
                              e.loss, static_cast<unsigned long long>(e.step), e.age_s);
  if (e.virtual_time >= 0 && n > 0 && static_cast<size_t>(n) < sizeof(line))
    std::snprintf(line + n, sizeof(line) - static_cast<size_t>(n), " %.6f", e.virtual_time);
  return line;
}

std::optional<EvalLine> parse_eval_line(const std::string& line) {
  EvalLine e;
  unsigned long long step = 0;
  const int n = std::sscanf(line.c_str(), "eval %u %lf %lf %lf %llu %lf %lf", &e.worker, &e.epoch, &e.accuracy, &e.loss,
                            &step, &e.age_s, &e.virtual_time);
  if (n < 6) return std::nullopt;
  if (n == 6) e.virtual_time = -1;
  e.step = step;
  return e;
}

Evaluator::Evaluator(uint32_t worker, const Dataset& test, size_t count, bool background,
                     std::function<void(const std::string&)> report)
    : worker_(worker), test_(test), count_(count), report_(std::move(report)) {
  if (background) thread_ = std::thread([this] { loop(); });
}

Evaluator::~Evaluator() {
  if (!thread_.joinable()) return;
  drain();
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void Evaluator::submit(std::span<const float> params, double epoch, uint64_t step, double virtual_time) {
  const auto taken = std::chrono::steady_clock::now();
  if (!thread_.joinable()) return evaluate({{}, epoch, step, taken, virtual_time}, params);
  {
    std::lock_guard lock(mutex_);
    // One snapshot waits behind the one under test, at most; a newer one
    // takes its place. Tests slower than steps (an evaluation every step) must
    // not pile up a copy of the model per step; the last, the final model,
    // always gets its test.
    if (queue_.size() < 2) queue_.push_back({std::move(spare_), 0, 0, {}, -1});
    Snapshot& s = queue_.back();
    s.params.assign(params.begin(), params.end());  // under the lock: the evaluator may reach it any moment
    s.epoch = epoch;
    s.step = step;
    s.taken = taken;
    s.virtual_time = virtual_time;
  }
  changed_.notify_all();
}

void Evaluator::drain() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return queue_.empty(); });
}

void Evaluator::loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;          // stopping, nothing left
    const Snapshot& s = queue_.front();  // only submit() appends: the front stays put
    lock.unlock();
    evaluate(s, s.params);
    lock.lock();
    spare_ = std::move(queue_.front().params);
    queue_.pop_front();
    changed_.notify_all();
  }
}

// `params`: the snapshot's own copy, or (inline) the worker's parameters.
void Evaluator::evaluate(const Snapshot& s, std::span<const float> params) {
  double loss = 0;
  const size_t correct = model_.evaluate(params, test_.images.data(), test_.labels.data(), count_, &loss);
  const double age = std::chrono::duration<double>(std::chrono::steady_clock::now() - s.taken).count();
  {
    std::lock_guard lock(mutex_);  // inline (virtual workers) it is not held; on the thread, loop() let it go
    last_loss_ = loss;
  }
  report_(format_eval_line({worker_, s.epoch, static_cast<double>(correct) / static_cast<double>(count_), loss, s.step,
                            age, s.virtual_time}));
}

}  // namespace rdmaps::train
