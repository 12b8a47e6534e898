#include "src/train/virtual_workers.h"

#include <cmath>
#include <cstdlib>
#include <memory>

#include "rdmaps/error.h"
#include "transport/file_limit.h"

namespace rdmaps::train {

DelaySpec DelaySpec::parse(const std::string& flag, const std::string& text) {
  auto bad = [&](const std::string& why) -> DelaySpec {
    throw Error(Errc::kInvalidArgument,
                flag + ": '" + text + "' " + why + " (round-robin, geometric:MEAN or uniform:MAX; see --help)");
  };
  if (text == "round-robin") return {Kind::kRoundRobin, 0};
  const auto colon = text.find(':');
  if (colon == std::string::npos) return bad("is not a delay schedule");
  const std::string kind = text.substr(0, colon), value = text.substr(colon + 1);
  char* end = nullptr;
  const double v = std::strtod(value.c_str(), &end);
  if (value.empty() || *end || !std::isfinite(v)) return bad("has no number after the colon");
  if (kind == "geometric") {
    if (v <= 0) return bad("needs a mean delay above 0");
    return {Kind::kGeometric, v};
  }
  if (kind == "uniform") {
    if (v < 1 || v != std::floor(v) || v > 1e9) return bad("needs a whole largest delay of at least 1");
    return {Kind::kUniform, v};
  }
  return bad("names no known schedule");
}

std::string DelaySpec::to_string() const {
  char buf[48];
  switch (kind) {
    case Kind::kRoundRobin:
      return "round-robin";
    case Kind::kGeometric:
      std::snprintf(buf, sizeof(buf), "geometric:%g", value);
      return buf;
    case Kind::kUniform:
      std::snprintf(buf, sizeof(buf), "uniform:%g", value);
      return buf;
  }
  return "?";
}

StepSchedule::StepSchedule(uint32_t workers, DelaySpec delay, uint64_t seed)
    : workers_(workers), spec_(delay), rng_(seed * 6364136223846793005ull + 1442695040888963407ull) {
  pulled_at_.assign(workers, 0);
  // Staggered by one tick each: round-robin then makes every push after the
  // first round exactly workers - 1 updates stale.
  for (uint32_t w = 0; w < workers; ++w) queue_.push({w + this->delay(), w});
}

uint64_t StepSchedule::delay() {
  switch (spec_.kind) {
    case DelaySpec::Kind::kRoundRobin:
      return 0;
    case DelaySpec::Kind::kGeometric:
      return std::geometric_distribution<uint64_t>(1.0 / (1.0 + spec_.value))(rng_);
    case DelaySpec::Kind::kUniform:
      return std::uniform_int_distribution<uint64_t>(0, static_cast<uint64_t>(spec_.value))(rng_);
  }
  return 0;
}

void StepSchedule::stepped(bool more) {
  const Due due = queue_.top();
  queue_.pop();
  const uint64_t tau = version_ - pulled_at_[due.worker];
  if (staleness_.size() <= tau) staleness_.resize(tau + 1, 0);
  ++staleness_[tau];
  pulled_at_[due.worker] = ++version_;
  if (more) queue_.push({due.tick + workers_ + delay(), due.worker});
}

void run_virtual_workers(const ClientOptions& client, const WorkerOptions& options, uint32_t workers, DelaySpec delay,
                         const TrainTest& data, const Report& report) {
  if (workers == 0) throw Error(Errc::kInvalidArgument, "--virtual-workers: needs at least 1 worker");
  if (client.config.staleness != kInfiniteStaleness)
    throw Error(Errc::kInvalidArgument,
                "--virtual-workers: the schedule sets the staleness, so the servers must be fully asynchronous "
                "(--async), not SSP/BSP");
  transport::raise_open_file_limit();  // every client holds a few descriptors
  std::vector<std::unique_ptr<TrainingWorker>> all;
  for (uint32_t k = 0; k < workers; ++k) {
    ClientOptions co = client;
    co.worker = k;
    WorkerOptions wo = options;
    wo.worker = k;
    wo.workers = workers;
    wo.evaluate = k == 0;
    wo.evaluate_aside = false;  // the schedule decides what it sees, not the clock
    wo.straggle = 1.0;          // delays are the schedule's
    all.push_back(std::make_unique<TrainingWorker>(co, wo, data, report));
  }
  for (auto& w : all) w->connect();  // worker 0 first: it sets the initial weights
  for (auto& w : all) w->begin();
  StepSchedule schedule(workers, delay, options.seed);
  while (!schedule.done()) {
    TrainingWorker& w = *all[schedule.next()];
    w.step();  // returns once its pull is back: the servers took in its push
    // A worker's last step pulls nothing behind its push; without this wait
    // the next worker's push could be applied first, off the schedule.
    if (w.finished()) w.settle();
    schedule.stepped(!w.finished());
  }
  all[0]->final_evaluation();  // every step's push is in: each waited for its pull, the last ones settled
  for (auto& w : all) w->finish();
  // A push reaches the servers as one piece per shard it covers; they count
  // staleness per piece.
  const uint64_t pieces = all[0]->steps() ? all[0]->client().stats().pushes / all[0]->steps() : 1;
  std::string line = "schedule";
  for (size_t tau = 0; tau < schedule.staleness().size(); ++tau)
    if (schedule.staleness()[tau])
      line += " " + std::to_string(tau) + ":" + std::to_string(schedule.staleness()[tau] * pieces);
  report(line);
}

}  // namespace rdmaps::train
