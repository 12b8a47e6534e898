// Many workers in one process with controlled staleness: each is a real
// client of the real servers (its own worker id, inbox and DC backup there),
// but they step one at a time in a seeded schedule instead of racing for
// cores, so a run with 32 workers on 2 cores has the staleness of 32 workers
// in parallel, and two runs with the same seed are identical bit for bit
// (docs/architecture.md "Virtual workers").
#pragma once

#include <cstdint>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "src/train/worker.h"

namespace rdmaps::train {

/// How long each step of a virtual worker takes, in ticks. A tick is one
/// update slot: with N workers a step takes N ticks, plus the delay drawn here.
struct DelaySpec {
  enum class Kind { kRoundRobin, kGeometric, kUniform };
  Kind kind = Kind::kRoundRobin;
  double value = 0;  ///< geometric: mean delay; uniform: largest delay (ticks)

  /// "round-robin", "geometric:MEAN" (MEAN > 0) or "uniform:MAX" (MAX >= 1);
  /// throws Error naming `flag` otherwise.
  static DelaySpec parse(const std::string& flag, const std::string& text);
  std::string to_string() const;
};

/// Which worker pushes next. Every worker pulls right after it pushes, so a
/// push's staleness is the number of other pushes since its own last one;
/// the schedule counts them, which is what the servers must measure too.
class StepSchedule {
 public:
  StepSchedule(uint32_t workers, DelaySpec delay, uint64_t seed);

  bool done() const { return queue_.empty(); }
  /// The worker whose step comes next (ties go to the lower id).
  uint32_t next() const { return queue_.top().worker; }
  /// next() stepped (pushed, then pulled); `more`: it has steps left.
  void stepped(bool more);

  /// Pushes by staleness (index tau), as the schedule made them.
  const std::vector<uint64_t>& staleness() const { return staleness_; }

 private:
  struct Due {
    uint64_t tick;
    uint32_t worker;
    bool operator>(const Due& o) const { return tick != o.tick ? tick > o.tick : worker > o.worker; }
  };
  uint64_t delay();

  uint32_t workers_;
  DelaySpec spec_;
  std::mt19937_64 rng_;
  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> queue_;
  uint64_t version_ = 0;             // pushes so far
  std::vector<uint64_t> pulled_at_;  // version each worker last pulled
  std::vector<uint64_t> staleness_;
};

/// Runs `workers` training workers in this process in `delay`'s schedule
/// against the servers of `client` (fully asynchronous). Reports each worker's
/// lines, then "schedule tau:count ..." (per push piece, as servers count).
void run_virtual_workers(const ClientOptions& client, const WorkerOptions& options, uint32_t workers, DelaySpec delay,
                         const TrainTest& data, const Report& report);

}  // namespace rdmaps::train
