// The polling loops' back-off: spin first, back off only after the idle
// time the policy names, and spin again as soon as work arrives.
#include "transport/idle_backoff.h"

#include <gtest/gtest.h>

#include <chrono>

namespace rdmaps::transport {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Polls an idle loop until it backs off; returns how long that took.
Clock::duration idle_until_backing_off(IdleBackoff& idle) {
  const auto start = Clock::now();
  while (!idle.backing_off() && Clock::now() - start < 5s) idle.pause(false);
  return Clock::now() - start;
}

TEST(IdleBackoff, SpinsForThePolicysIdleTimeThenBacksOff) {
  IdleBackoff idle({.spin = 2ms, .yield = 1ms, .sleep = 20us});
  const auto took = idle_until_backing_off(idle);
  EXPECT_TRUE(idle.backing_off()) << "an idle loop never backed off";
  EXPECT_GE(took, 2ms) << "backed off before the spin time was over";
}

TEST(IdleBackoff, WorkResetsIt) {
  IdleBackoff idle({.spin = 100us, .yield = 0us, .sleep = 20us});
  idle_until_backing_off(idle);
  ASSERT_TRUE(idle.backing_off());
  idle.pause(true);
  EXPECT_FALSE(idle.backing_off()) << "work arrived but the loop kept backing off";
  // A loop that finds work every other round never backs off.
  const auto start = Clock::now();
  for (int i = 0; Clock::now() - start < 5ms; ++i) idle.pause(i % 2 == 0);
  EXPECT_FALSE(idle.backing_off());
}

TEST(IdleBackoff, SleepsOnceIdleLongerThanSpinAndYieldAndLongerTheLongerItWaits) {
  IdleBackoff idle({.spin = 100us, .yield = 100us, .sleep = 1ms, .max_sleep = 3ms});
  auto round = [&] {
    const auto before = Clock::now();
    idle.pause(false);
    return Clock::now() - before;
  };
  // Idle from the first round, taken before the clock starts: a thread
  // descheduled past 1 ms before its first round ran none, and the next
  // round was the first idle one (110 ns, on a loaded machine).
  idle.pause(false);
  const auto start = Clock::now();
  while (Clock::now() - start < 1ms) idle.pause(false);
  EXPECT_GE(round(), 1ms) << "past spin + yield, a round should sleep at least the policy's step";
  while (Clock::now() - start < 80ms) idle.pause(false);  // 1/16 of 80 ms is past the 3 ms cap
  EXPECT_GE(round(), 3ms) << "a long-idle loop should sleep longer steps";
}

// Checks: peers one round in 1024 always; the deadline then too, and every
// round once the loop sleeps (late by one sleep, not by 1024 of them).
TEST(IdleBackoff, DeadlineChecksAreDueEveryRoundOnlyWhileItSleeps) {
  IdleBackoff idle({.spin = 100us, .yield = 100us, .sleep = 20us, .max_sleep = 20us});
  struct Count {
    int deadline = 0, peers = 0;
  };
  auto count = [&](int rounds, bool work) {
    Count c;
    for (int i = 0; i < rounds; ++i) {
      idle.pause(work);
      const auto due = idle.checks_due();
      c.deadline += due.deadline;
      c.peers += due.peers;
    }
    return c;
  };
  Count busy = count(4096, true);
  EXPECT_EQ(busy.deadline, 4) << "while work flows, one deadline check in 1024 rounds";
  EXPECT_EQ(busy.peers, 4);
  const auto start = Clock::now();
  int idle_rounds = 0, due = 0;
  for (; Clock::now() - start < 150us; ++idle_rounds) {  // spinning, then yielding
    idle.pause(false);
    due += idle.checks_due().deadline;
  }
  EXPECT_LE(due, idle_rounds / 1024 + 1) << "checks every round while it still spins or yields";
  while (Clock::now() - start < 2ms) idle.pause(false);  // now sleeping
  Count sleeping = count(10, false);
  EXPECT_EQ(sleeping.deadline, 10) << "a sleeping loop must check its deadline every round";
  EXPECT_LE(sleeping.peers, 1) << "peers (a poll each) stay at one round in 1024";
  Count again = count(1024, true);
  EXPECT_EQ(again.deadline, 1) << "work arrived: back to one deadline check in 1024 rounds";
}

TEST(NoWakeupPreemption, BatchPolicyWhileOnAndThePreviousPolicyBack) {
  ASSERT_EQ(sched_getscheduler(0), SCHED_OTHER) << "the test thread starts in the normal policy";
  {
    NoWakeupPreemption off(false);
    EXPECT_FALSE(off.active());
    EXPECT_EQ(sched_getscheduler(0), SCHED_OTHER);
  }
  {
    NoWakeupPreemption on(true);
    EXPECT_TRUE(on.active());
    EXPECT_EQ(sched_getscheduler(0), SCHED_BATCH);
  }
  EXPECT_EQ(sched_getscheduler(0), SCHED_OTHER);
}

}  // namespace
}  // namespace rdmaps::transport
