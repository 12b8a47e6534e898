// Remote 64-bit atomics: concurrent fetch-adds from two processes are exact;
// compare-swap swaps only on a match and returns the prior value.
#include <atomic>
#include <vector>

#include "tests/transport/fixture.h"

namespace rdmaps::test {
namespace {

constexpr uint64_t kAddsPerClient = 100000;
constexpr size_t kWindow = 128;

class AtomicTest : public TransportTest {};

TEST_P(AtomicTest, TwoClientsFetchAddExactly) {
  auto region = context->allocate(4096, Access::kRemoteReadWrite);
  std::memset(region->data(), 0, region->size());
  PeerProcess a("fetch_adder", GetParam(), port(), seed);
  PeerProcess b("fetch_adder", GetParam(), port(), seed);
  auto ep_a = accept();
  auto ep_b = accept();
  send_descriptor(*ep_a, *region, Access::kRemoteReadWrite);
  send_descriptor(*ep_b, *region, Access::kRemoteReadWrite);
  // Over tcp the atomics are emulated here, so keep progressing while they run.
  EXPECT_EQ(recv_words(*ep_a).at(0), kAddsPerClient);
  EXPECT_EQ(recv_words(*ep_b).at(0), kAddsPerClient);
  auto* counter = static_cast<std::atomic<uint64_t>*>(region->data());
  EXPECT_EQ(counter->load(), 2 * kAddsPerClient);
  send_words(*ep_a, {1});
  send_words(*ep_b, {1});
  EXPECT_EQ(a.wait(30s), 0);
  EXPECT_EQ(b.wait(30s), 0);
}

RDMAPS_TEST_PEER(fetch_adder) {
  PeerSession s(args);
  auto remote = s.import_remote();
  std::vector<uint64_t> old(kWindow);
  std::vector<transport::Request> inflight(kWindow);
  uint64_t posted = 0;
  while (posted < kAddsPerClient) {
    size_t slot = posted % kWindow;
    inflight[slot].wait();  // the slot's previous result buffer is free again
    inflight[slot] = s.endpoint->fetch_add(*remote, 0, 1, &old[slot]);
    ++posted;
  }
  for (auto& r : inflight) r.wait();
  s.endpoint->flush().wait_for(kSetupTimeout);
  send_words(*s.endpoint, {posted});
  recv_words(*s.endpoint);  // stay until the test read the counter
  return 0;
}

TEST_P(AtomicTest, CompareSwapSwapsOnlyOnMatch) {
  auto region = context->allocate(4096, Access::kRemoteReadWrite);
  auto* word = static_cast<std::atomic<uint64_t>*>(region->data());
  word[1] = 5;
  PeerProcess peer("compare_swapper", GetParam(), port(), seed);
  auto ep = accept();
  send_descriptor(*ep, *region, Access::kRemoteReadWrite);
  auto olds = recv_words(*ep);
  ASSERT_EQ(olds.size(), 3u);
  EXPECT_EQ(olds[0], 5u) << "mismatched compare-swap must return the current value";
  EXPECT_EQ(olds[1], 5u) << "matching compare-swap must return the prior value";
  EXPECT_EQ(olds[2], 9u) << "fetch-add after the swap must see the swapped value";
  EXPECT_EQ(word[1].load(), 10u);
  EXPECT_EQ(peer.wait(30s), 0);
}

RDMAPS_TEST_PEER(compare_swapper) {
  PeerSession s(args);
  auto remote = s.import_remote();
  uint64_t a = 0, b = 0, c = 0;
  s.endpoint->compare_swap(*remote, 8, /*expected=*/4, /*desired=*/9, &a).wait();  // no match: stays 5
  s.endpoint->compare_swap(*remote, 8, /*expected=*/5, /*desired=*/9, &b).wait();  // match: becomes 9
  s.endpoint->fetch_add(*remote, 8, 1, &c).wait();                                 // 9 -> 10
  s.endpoint->flush().wait_for(kSetupTimeout);
  send_words(*s.endpoint, {a, b, c});
  return 0;
}

RDMAPS_INSTANTIATE_OVER_TRANSPORTS(AtomicTest);

}  // namespace
}  // namespace rdmaps::test
