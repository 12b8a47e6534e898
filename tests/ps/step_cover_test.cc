// What a worker's step covered of a shard: pieces in any order, adjoining or
// not, count as one step until one overlaps what it covered.
#include "src/ps/step_cover.h"

#include <gtest/gtest.h>

namespace rdmaps::ps {
namespace {

TEST(StepCover, PiecesInAnyOrderStayOneStepUntilOneOverlaps) {
  StepCover c;
  EXPECT_EQ(c.step(), 0u);
  c.start(3, 0, 64);
  c.add(384, 448);
  // Between the two: a hull [0, 448) would take it for floats already pushed.
  EXPECT_FALSE(c.covers_any(128, 192));
  c.add(128, 192);
  EXPECT_EQ(c.runs(), 3u);
  EXPECT_TRUE(c.covers_any(150, 151));
  EXPECT_TRUE(c.covers_any(0, 1));
  EXPECT_TRUE(c.covers_any(447, 500));
  EXPECT_FALSE(c.covers_any(64, 128));
  EXPECT_FALSE(c.covers_any(448, 1000));
  c.add(64, 128);  // touches both neighbours: one run
  EXPECT_EQ(c.runs(), 2u);
  EXPECT_TRUE(c.covers_any(100, 101));
  c.add(192, 384);
  EXPECT_EQ(c.runs(), 1u);
  EXPECT_EQ(c.step(), 3u);
  c.start(4, 500, 600);  // a new step forgets the old one
  EXPECT_FALSE(c.covers_any(0, 448));
  EXPECT_EQ(c.runs(), 1u);
}

TEST(StepCover, PastItsRunsTheNearestTwoMergeAndOnlyTheirGapCounts) {
  StepCover c;
  c.start(1, 0, 10);
  c.add(100, 110);
  c.add(115, 120);  // 5 floats from the run before: the nearest pair
  c.add(300, 310);
  EXPECT_EQ(c.runs(), StepCover::kRuns);
  EXPECT_FALSE(c.covers_any(112, 113));
  c.add(500, 510);  // one run too many
  EXPECT_EQ(c.runs(), StepCover::kRuns);
  EXPECT_TRUE(c.covers_any(112, 113));  // the gap merged over: a step too many there, never too few
  EXPECT_FALSE(c.covers_any(10, 100));
  EXPECT_FALSE(c.covers_any(120, 300));
  EXPECT_FALSE(c.covers_any(310, 500));
  EXPECT_TRUE(c.covers_any(505, 506));
  // Out of order, the same.
  StepCover d;
  d.start(1, 500, 510);
  d.add(0, 10);
  d.add(300, 310);
  d.add(115, 120);
  d.add(100, 110);
  EXPECT_EQ(d.runs(), StepCover::kRuns);
  EXPECT_TRUE(d.covers_any(112, 113));
  EXPECT_FALSE(d.covers_any(10, 100));
}

}  // namespace
}  // namespace rdmaps::ps
