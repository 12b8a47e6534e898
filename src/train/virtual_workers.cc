#include "src/train/virtual_workers.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>

#include "rdmaps/error.h"
#include "src/api/cli.h"
#include "transport/file_limit.h"
#include "transport/memory_limit.h"

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
  double v = 0;
  if (!cli::parse_real(value, v) || !std::isfinite(v)) return bad("has no number after the colon");
  if (kind == "geometric") {
    // Past 1e9 ticks the draw's chance 1/(1+MEAN) is lost in rounding (1e18 gave less delay than 4).
    if (v <= 0 || v > 1e9) return bad("needs a mean delay above 0 and at most 1e9");
    return {Kind::kGeometric, v};
  }
  if (kind == "uniform") {
    if (v < 1 || v != std::floor(v) || v > 1e9) return bad("needs a whole largest delay from 1 to 1e9");
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

StepSchedule::StepSchedule(uint32_t workers, DelaySpec delay, uint64_t seed, uint64_t bound, Straggler straggler)
    : workers_(workers),
      spec_(delay),
      bound_(bound),
      straggler_(straggler),
      rng_(seed * 6364136223846793005ull + 1442695040888963407ull) {
  pulled_at_.assign(workers, 0);
  clock_.assign(workers, 0);
  finished_.assign(workers, false);
  // Staggered by one tick each: round-robin then makes every push after the
  // first round exactly workers - 1 updates stale.
  for (uint32_t w = 0; w < workers; ++w) queue_.push({w + duration(w) - workers, w});
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

uint64_t StepSchedule::duration(uint32_t worker) {
  uint64_t ticks = workers_;
  const bool slow = straggler_.random ? std::bernoulli_distribution(1.0 / workers_)(rng_)
                                      : static_cast<int64_t>(worker) == straggler_.worker;
  // FACTOR times the N ticks of a step, to the nearest tick; one that rounds
  // to N is no slower, and not counted as straggled (4 workers at 1.1 were).
  if (slow && straggler_.factor > 1) ticks = static_cast<uint64_t>(std::llround(straggler_.factor * workers_));
  if (ticks > workers_) ++straggled_;
  return ticks + delay();
}

// A finished worker's clock is past anyone's: only those still stepping count.
uint64_t StepSchedule::slowest() const {
  uint64_t m = UINT64_MAX;
  for (uint32_t w = 0; w < workers_; ++w)
    if (!finished_[w]) m = std::min(m, clock_[w]);
  return m;
}

// As the client's clock() waits: after clock c, until every live worker reached c - bound.
bool StepSchedule::held(uint32_t worker, uint64_t slowest) const {
  return bound_ != UINT64_MAX && clock_[worker] > bound_ && slowest < clock_[worker] - bound_;
}

void StepSchedule::start(uint32_t worker) {
  pulled_at_[worker] = version_;
  pulling_.push_back(worker);
  queue_.push({now_ + duration(worker), worker});
}

std::span<const uint32_t> StepSchedule::stepped(bool more) {
  const Due due = queue_.top();
  queue_.pop();
  now_ = due.tick;
  const uint64_t tau = version_ - pulled_at_[due.worker];
  if (staleness_.size() <= tau) staleness_.resize(tau + 1, 0);
  ++staleness_[tau];
  ++version_;
  ++clock_[due.worker];
  finished_[due.worker] = !more;
  pulling_.clear();
  const uint64_t least = slowest();  // starting a step changes no clock
  if (more && !held(due.worker, least)) {
    start(due.worker);
  } else if (more) {
    waiting_.insert(std::lower_bound(waiting_.begin(), waiting_.end(), due.worker), due.worker);
  }
  // Only the slowest worker's clock (or its finishing) lets anyone go.
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (*it == due.worker || held(*it, least)) {
      ++it;
      continue;
    }
    start(*it);
    it = waiting_.erase(it);
  }
  return pulling_;
}

namespace {

// Every virtual worker is a whole client (its UCX context and buffers, its
// copies of the model, a connection to every server lane): 1024 of them took
// 14.8 GB. Measured over the first few, the rest must fit in memory, or the
// kernel kills the run (or a neighbour) later, and in open files, or UCX
// aborts the process in ucp_ep_create (it cannot return that as an error).
class FootprintProbe {
 public:
  FootprintProbe(uint32_t workers, transport::FileLimit files) : workers_(workers), files_(files) {}

  void connected(uint32_t k) {
    // The first worker also pays for the libraries and the evaluator.
    if (k == 1) {
      base_memory_ = transport::resident_bytes();
      base_available_ = transport::available_memory().bytes;
      base_files_ = transport::open_file_count();
    }
    if (k >= workers_) return;
    // Every worker opens the same connections: one measured is enough to stop
    // before the limit, and the probe of memory refines it.
    if (k == 2 || k == 1 + kProbed) check_files(k);
    if (k == 1 + kProbed) check_memory(k);
  }

 private:
  void check_files(uint32_t k) const {
    const std::optional<uint64_t> now = transport::open_file_count();
    if (!base_files_ || !now || files_.soft == 0 || files_.soft == RLIM_INFINITY) return;
    const uint64_t each = *now > *base_files_ ? (*now - *base_files_ + k - 2) / (k - 1) : 0;
    // UCX opens a few more as the workers run (a peer's connection back over tcp).
    const uint64_t rest = workers_ - k, need = each * rest + each * rest / 8 + kSpareFiles;
    if (*now + need <= files_.soft) return;
    throw Error(Errc::kInvalidArgument,
                "--virtual-workers " + std::to_string(workers_) + ": each worker holds about " + std::to_string(each) +
                    " open files (measured over workers 1 to " + std::to_string(k - 1) +
                    ": its connections to every server lane), so the other " + std::to_string(rest) + " need about " +
                    std::to_string(need) + " more, but this process may open " + std::to_string(files_.soft) +
                    " (ulimit -n, raised to its hard limit) and has " + std::to_string(*now) +
                    " open: lower --virtual-workers, --servers or --server-threads, or " +
                    transport::kRaiseHardFileLimit);
  }

  void check_memory(uint32_t k) const {
    const uint64_t now = transport::resident_bytes();
    if (base_memory_ == 0) return;
    const transport::AvailableMemory available = transport::available_memory();
    // This process's growth, or, where more, what is no longer available:
    // the servers of a local run keep memory for each worker in the same
    // memory (6.9 MB a worker here, 14.3 MB in all; 32 workers that the
    // first let through were killed in a 600 MB cgroup).
    uint64_t each = now > base_memory_ ? (now - base_memory_) / (k - 1) : 0;
    if (base_available_ > available.bytes) each = std::max(each, (base_available_ - available.bytes) / (k - 1));
    const uint64_t rest = workers_ - k, need = each * rest;
    if (available.bytes == 0 || need <= available.bytes) return;
    throw Error(Errc::kInvalidArgument,
                "--virtual-workers " + std::to_string(workers_) + ": each worker takes about " +
                    transport::size_text(each) + " of memory (measured over workers 1 to " + std::to_string(k - 1) +
                    ": its client's UCX context and buffers, its copies of the model, and what servers on this "
                    "machine keep for it), so the other " +
                    std::to_string(rest) + " need about " + transport::size_text(need) + ", but " +
                    transport::size_text(available.bytes) + " is available (" + available.bound +
                    "): lower --virtual-workers, or run the workers as processes on more machines");
  }

  static constexpr uint32_t kProbed = 8;
  static constexpr uint64_t kSpareFiles = 64;  // the evaluator, logs, the servers' pipes
  uint32_t workers_;
  transport::FileLimit files_;
  uint64_t base_memory_ = 0, base_available_ = 0;
  std::optional<uint64_t> base_files_;
};

}  // namespace

void run_virtual_workers(const ClientOptions& client, const WorkerOptions& options, uint32_t workers, DelaySpec delay,
                         Straggler straggler, const TrainTest& data, const Report& report) {
  if (workers == 0) throw Error(Errc::kInvalidArgument, "--virtual-workers: needs at least 1 worker");
  std::vector<std::unique_ptr<TrainingWorker>> all;
  FootprintProbe footprint(workers, transport::raise_open_file_limit());
  for (uint32_t k = 0; k < workers; ++k) {
    ClientOptions co = client;
    // A client at the bound would wait in clock() for a worker only this
    // thread can step: the schedule holds it instead, at the same point.
    co.config.staleness = kInfiniteStaleness;
    co.worker = k;
    WorkerOptions wo = options;
    wo.worker = k;
    wo.workers = workers;
    wo.evaluate = k == 0;
    wo.evaluate_aside = false;  // the schedule decides what it sees, not the clock
    wo.straggle = 1.0;          // delays are the schedule's
    all.push_back(std::make_unique<TrainingWorker>(co, wo, data, report));
    all.back()->connect();  // worker 0 first: it sets the initial weights
    footprint.connected(k + 1);
  }
  all[0]->set_virtual_time(0);
  for (auto& w : all) w->begin();
  StepSchedule schedule(workers, delay, options.seed, client.config.staleness, straggler);
  while (!schedule.done()) {
    const uint32_t k = schedule.next();
    TrainingWorker& w = *all[k];
    w.push_step();
    const std::span<const uint32_t> pulling = schedule.stepped(!w.finished());
    // A pull returns once the servers took in the pushes before it (one inbox,
    // served in order). A worker that pulls nothing now (held, or done) waits
    // for that all the same: else the next push could be applied first, off
    // the schedule.
    if (pulling.empty() || pulling.front() != k) w.settle();
    for (uint32_t p : pulling) {
      all[p]->set_virtual_time(schedule.time());
      all[p]->pull_next();
    }
  }
  all[0]->set_virtual_time(schedule.time());
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
  char clock_line[96];
  std::snprintf(clock_line, sizeof(clock_line), "virtual-time %.6f %llu", schedule.time(),
                static_cast<unsigned long long>(schedule.straggled()));
  report(clock_line);
}

}  // namespace rdmaps::train
