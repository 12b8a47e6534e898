#pragma once

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <thread>

namespace rdmaps::transport {

/// How a polling loop waits once nothing arrives. One-sided writes raise no
/// event, so waits must poll; but a poller that spins for milliseconds takes
/// the core from the process it waits for wherever processes outnumber cores
/// (a node running several ranks, the local runs on a laptop or CI box).
struct IdlePolicy {
  std::chrono::microseconds spin{50};        ///< idle this long: keep spinning (lowest latency)
  std::chrono::microseconds yield{950};      ///< then this long: sched_yield() between polls
  std::chrono::microseconds sleep{20};       ///< after that: sleep between polls, at least this long,
  std::chrono::microseconds max_sleep{500};  ///< growing with the idle time (1/`share` of it) up to this
  /// Each sleep is at most 1/share of the time already idle, so work that
  /// arrives after a wait W is noticed at most W/share (and max_sleep) late.
  uint32_t share = 16;
};

/// Call `pause(found_work)` once per polling round. Busy rounds and the first
/// `spin` of idleness cost no clock read per round (one every 64 idle rounds).
class IdleBackoff {
 public:
  explicit IdleBackoff(IdlePolicy policy = {}) : policy_(policy) {}

  void pause(bool found_work) {
    if (found_work) {
      idle_rounds_ = 0;
      backing_off_ = sleeping_ = false;
      return;
    }
    if (idle_rounds_++ % 64 != 0 && !backing_off_) return;
    const auto now = std::chrono::steady_clock::now();
    if (idle_rounds_ == 1) {
      idle_since_ = now;
      return;
    }
    const auto idle = now - idle_since_;
    if (idle < policy_.spin) return;
    backing_off_ = true;
    if (idle < policy_.spin + policy_.yield) {
      sched_yield();
      return;
    }
    // Waking costs a few microseconds of CPU: a long wait wakes less often,
    // adding at most 1/share of the time already waited.
    sleeping_ = true;
    const auto step = std::chrono::duration_cast<std::chrono::microseconds>(idle / std::max(policy_.share, 1u));
    std::this_thread::sleep_for(std::clamp(step, policy_.sleep, std::max(policy_.sleep, policy_.max_sleep)));
  }

  /// True once the loop yields or sleeps between polls (for tests and stats).
  bool backing_off() const { return backing_off_; }

  /// Which of a polling loop's checks are due this round: liveness (a poll
  /// per peer) every 1024th round; the deadline (a clock read) then too, and
  /// every round once the loop sleeps, so a deadline is missed by one sleep
  /// at most rather than by 1024 of them (half a second; seconds on a loaded
  /// machine).
  struct Checks {
    bool deadline;
    bool peers;
  };
  Checks checks_due() {
    const bool periodic = (++rounds_ & 0x3ff) == 0;
    return {periodic || sleeping_, periodic};
  }

 private:
  IdlePolicy policy_;
  uint64_t idle_rounds_ = 0;
  uint32_t rounds_ = 0;
  bool backing_off_ = false;
  bool sleeping_ = false;
  std::chrono::steady_clock::time_point idle_since_{};
};

/// While it lives, the calling thread's wakeups never preempt a running
/// thread (Linux SCHED_BATCH; its previous policy comes back after). For a
/// poller that sleeps in short steps where threads outnumber cores: each wake
/// that finds nothing would otherwise take the core from the thread doing the
/// work (docs/benchmarks.md "Server threads"). The price: a wake that finds
/// work may wait for a busy core up to a scheduler slice.
class NoWakeupPreemption {
 public:
  explicit NoWakeupPreemption(bool on) {
    if (!on) return;
    saved_ = sched_getscheduler(0);
    sched_param none{};
    if (saved_ != SCHED_OTHER || sched_setscheduler(0, SCHED_BATCH, &none) != 0)
      saved_ = -1;  // leave RT/odd policies alone
  }
  ~NoWakeupPreemption() {
    if (saved_ < 0) return;
    sched_param none{};
    sched_setscheduler(0, saved_, &none);
  }
  NoWakeupPreemption(const NoWakeupPreemption&) = delete;
  NoWakeupPreemption& operator=(const NoWakeupPreemption&) = delete;

  bool active() const { return saved_ >= 0; }

 private:
  int saved_ = -1;
};

}  // namespace rdmaps::transport
