// Rank 0's roll, alone: what its answers say as ranks arrive, leave and are
// refused (the rendezvous tests drive it through sockets and processes).
#include "src/launch/rendezvous_roll.h"

#include <gtest/gtest.h>

namespace rdmaps::launch {
namespace {

TEST(RendezvousRoll, RangesAreShortForLongRuns) {
  EXPECT_EQ(ranges_of({}), "");
  EXPECT_EQ(ranges_of({3}), "3");
  EXPECT_EQ(ranges_of({0, 2, 3, 4, 5, 9}), "0,2-5,9");
  EXPECT_EQ(ranges_of({7, 8}), "7-8");
}

TEST(RendezvousRoll, CompleteOnceEveryRankAskedAndEveryServerRegistered) {
  RendezvousRoll roll(4, 2);  // ranks 0 and 1 serve
  EXPECT_EQ(roll.answer(), "wait missing 0-3");
  EXPECT_EQ(roll.arrive(2, "-", "10@a#1"), "");
  EXPECT_EQ(roll.arrive(0, "h0:1", "11@a#1"), "");
  EXPECT_EQ(roll.answer(), "wait missing 1,3");
  EXPECT_EQ(roll.arrive(3, "-", "12@b#1"), "");
  EXPECT_FALSE(roll.complete());
  EXPECT_EQ(roll.arrive(1, "h1:2", "13@b#1"), "");
  EXPECT_TRUE(roll.complete());
  EXPECT_EQ(roll.answer(), "ok h0:1,h1:2");
  EXPECT_EQ(roll.process_of(3), "12@b#1");
  roll.leave(1);  // complete stays complete: the others may already hold the addresses
  EXPECT_EQ(roll.answer(), "ok h0:1,h1:2");
}

TEST(RendezvousRoll, AServerRankRegisteredTwiceIsRefusedUntilItLeft) {
  RendezvousRoll roll(3, 1);
  EXPECT_EQ(roll.arrive(0, "h0:1", "1@a#1"), "");
  EXPECT_EQ(roll.arrive(0, "h0:1", "1@a#1"), "");  // the same address again: it asks every 100 ms
  const std::string why = roll.arrive(0, "h9:9", "2@b#1");
  EXPECT_NE(why.find("server rank 0 registered twice (h0:1 and h9:9)"), std::string::npos) << why;
  roll.leave(0);  // its connection went before the roll was complete: a restarted copy may register
  EXPECT_EQ(roll.answer(), "wait missing 0-2");
  EXPECT_EQ(roll.arrive(0, "h9:9", "2@b#1"), "");
  EXPECT_EQ(roll.arrive(1, "-", "3@a#1"), "");
  EXPECT_EQ(roll.arrive(2, "-", "4@a#1"), "");
  EXPECT_EQ(roll.answer(), "ok h9:9");
}

TEST(RendezvousRoll, TheWaitQuotesMissingRanksRefusalsProvenFirst) {
  RendezvousRoll roll(4, 1);
  EXPECT_EQ(roll.arrive(0, "h0:1", "1@a#1"), "");
  roll.refused(2, "an unproven claim", false);
  roll.refused(3, "world size 5, not 4", true);
  roll.refused(0, "ignored: rank 0 is present", true);
  roll.refused(9, "ignored: past the world", true);
  EXPECT_EQ(roll.answer(),
            "wait missing 1-3\nrank 3 was refused world size 5, not 4\n"
            "rank 2 may have been refused (a request naming it proved no secret) an unproven claim");
  roll.refused(3, "an unproven one never replaces a proven refusal", false);
  EXPECT_NE(roll.answer().find("rank 3 was refused world size 5, not 4"), std::string::npos);
  EXPECT_EQ(roll.arrive(3, "-", "5@c#1"), "");  // arrived: its refusal is no longer quoted
  EXPECT_EQ(roll.answer().find("rank 3"), std::string::npos) << roll.answer();
}

}  // namespace
}  // namespace rdmaps::launch
