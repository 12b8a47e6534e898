// The staged push's order (src/ps/staged_pipeline.h), with a ring whose sends
// complete only when released: every piece is sent once, in order, from a
// buffer that holds it, no buffer is refilled under a send, and the ring
// keeps more than one send in flight.
#include "src/ps/staged_pipeline.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

namespace rdmaps::ps {
namespace {

struct Ring {
  explicit Ring(int depth) : holds(static_cast<size_t>(std::max(depth, 1)), -1), sending(holds.size(), false) {}
  std::vector<long> holds;    // the piece each buffer holds
  std::vector<bool> sending;  // a send from it not completed yet
  std::vector<long> sent;
  size_t in_flight = 0, most_in_flight = 0;  // most: while pieces were still staged (at the end all may be)
};

Ring play(size_t n, int depth, size_t& posted, long fail_at = -1) {
  Ring r(depth);
  run_staged(
      n, depth,
      [&](size_t b) {
        if (r.sending[b]) --r.in_flight;
        r.sending[b] = false;
      },
      [&](size_t i) {
        const size_t b = i % r.holds.size();
        EXPECT_FALSE(r.sending[b]) << "piece " << i << " refilled buffer " << b << " under a send";
        r.holds[b] = static_cast<long>(i);
      },
      [&](size_t i) {
        if (static_cast<long>(i) == fail_at) throw std::runtime_error("send failed");
        const size_t b = i % r.holds.size();
        EXPECT_EQ(r.holds[b], static_cast<long>(i)) << "piece " << i << " sent from a buffer holding another";
        r.sending[b] = true;
        ++r.in_flight;
        if (i + r.holds.size() < n) r.most_in_flight = std::max(r.most_in_flight, r.in_flight);
        r.sent.push_back(static_cast<long>(i));
      },
      posted);
  return r;
}

TEST(StagedPipeline, EveryPieceGoesOnceInOrderAndSendsOverlap) {
  for (const int depth : {1, 2, 3, 4, 8, 9, 16}) {
    for (const size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{5}, size_t{64}}) {
      SCOPED_TRACE("depth " + std::to_string(depth) + ", " + std::to_string(n) + " pieces");
      size_t posted = 99;
      const Ring r = play(n, depth, posted);
      EXPECT_EQ(posted, n);
      ASSERT_EQ(r.sent.size(), n);
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(r.sent[i], static_cast<long>(i));
      if (n >= 2 * static_cast<size_t>(depth)) {
        EXPECT_EQ(r.most_in_flight, static_cast<size_t>(std::max(depth, 1)) - staged_ahead(depth)) << "sends in flight";
      }
    }
  }
  // A ring of 8 keeps 6 sends in flight (all but one filled ahead kept one).
  size_t posted = 0;
  EXPECT_EQ(play(64, 8, posted).most_in_flight, 6u);
}

TEST(StagedPipeline, ASendThatFailsLeavesTheCountOfThoseBeforeIt) {
  size_t posted = 0;
  EXPECT_THROW(play(10, 8, posted, 7), std::runtime_error);
  EXPECT_EQ(posted, 7u);
  EXPECT_THROW(play(10, 8, posted, 0), std::runtime_error);
  EXPECT_EQ(posted, 0u) << "a piece staged ahead is not one sent";
}

}  // namespace
}  // namespace rdmaps::ps
