// Many workers in one process with controlled staleness: each is a real
// client of the real servers (its own worker id, inbox and DC backup there),
// but they step one at a time in a seeded schedule instead of racing for
// cores, so a run with 32 workers on 2 cores has the staleness of 32 workers
// in parallel, and two runs with the same seed are identical bit for bit.
// The schedule also plays stragglers and the SSP bound, on a clock of its own
// (docs/architecture.md "Virtual workers").
#pragma once

#include <cstdint>
#include <queue>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "src/train/options.h"
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

/// Which worker pushes next, and when each pulls. A worker pulls right after
/// it pushes unless the SSP bound holds it, so a push's staleness is the
/// number of other pushes since its own last pull; the schedule counts them,
/// which is what the servers must measure too.
class StepSchedule {
 public:
  /// `bound`: SSP's, as the client applies it (a worker that finished clock c
  /// starts its next step once the slowest reached c - bound); UINT64_MAX: none.
  StepSchedule(uint32_t workers, DelaySpec delay, uint64_t seed, uint64_t bound = UINT64_MAX, Straggler straggler = {});

  bool done() const { return queue_.empty(); }
  /// The worker whose step ends next (ties go to the lower id).
  uint32_t next() const { return queue_.top().worker; }
  /// next() pushed and clocked; `more`: it has steps left. Returns who pulls
  /// now, in order: next(), unless the bound holds it, then the held workers
  /// its clock lets go, by id.
  std::span<const uint32_t> stepped(bool more);

  /// Pushes by staleness (index tau), as the schedule made them.
  const std::vector<uint64_t>& staleness() const { return staleness_; }
  /// The schedule's clock at the last step, in step times: a step at full speed
  /// takes one (a tick is 1/workers of it, one update slot).
  double time() const { return static_cast<double>(now_) / workers_; }
  /// Steps that were slow (Straggler).
  uint64_t straggled() const { return straggled_; }

 private:
  struct Due {
    uint64_t tick;
    uint32_t worker;
    bool operator>(const Due& o) const { return tick != o.tick ? tick > o.tick : worker > o.worker; }
  };
  uint64_t delay();
  uint64_t duration(uint32_t worker);  // of its next step, in ticks
  uint64_t slowest() const;            // clock of the slowest worker still stepping
  bool held(uint32_t worker, uint64_t slowest) const;
  void start(uint32_t worker);  // pulls now, pushes after its step

  uint32_t workers_;
  DelaySpec spec_;
  uint64_t bound_;
  Straggler straggler_;
  std::mt19937_64 rng_;
  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> queue_;
  uint64_t now_ = 0, version_ = 0, straggled_ = 0;  // version_: pushes so far
  std::vector<uint64_t> pulled_at_;                 // version each worker last pulled
  std::vector<uint64_t> clock_;                     // steps each worker finished
  std::vector<bool> finished_;
  std::vector<uint32_t> waiting_;  // held at the bound, by id
  std::vector<uint32_t> pulling_;  // what stepped() returns
  std::vector<uint64_t> staleness_;
};

/// Runs `workers` training workers in this process in `delay`'s schedule
/// against the servers of `client`, which run fully asynchronous: the
/// schedule applies `client.config.staleness` itself. Reports each worker's
/// lines, then "schedule tau:count ..." (per push piece, as servers count).
void run_virtual_workers(const ClientOptions& client, const WorkerOptions& options, uint32_t workers, DelaySpec delay,
                         Straggler straggler, const TrainTest& data, const Report& report);

}  // namespace rdmaps::train
