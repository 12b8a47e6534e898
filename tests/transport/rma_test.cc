// Put and get land exactly the bytes, around UCX's protocol thresholds and far
// beyond; put, fence, flag never shows the flag before the data.
#include <algorithm>
#include <atomic>
#include <vector>

#include "tests/transport/fixture.h"

namespace rdmaps::test {
namespace {

// Around UCX's short/bcopy/zcopy/rendezvous switch points, up to 64 MiB.
const std::vector<size_t> kSizes = {1,       7,        8,       9,     63,    64,     255,    256,     2048,
                                    4095,    8185,     8193,    16384, 65536, 262143, 262145, 1 << 20, (1 << 20) + 3,
                                    4 << 20, 16 << 20, 64 << 20};
constexpr size_t kGuard = 4096;
constexpr uint8_t kCanary = 0xA5;

size_t offset_for(size_t size) { return size % 61; }  // unaligned offsets too

class RmaTest : public TransportTest {};

TEST_P(RmaTest, PutLandsExactlyTheBytesAndGetReadsThemBack) {
  auto region = context->allocate((64u << 20) + kGuard, Access::kRemoteReadWrite);
  auto* mem = static_cast<uint8_t*>(region->data());
  std::memset(mem, kCanary, region->size());
  PeerProcess peer("rma_put_get", GetParam(), port(), seed);
  auto ep = accept();
  send_descriptor(*ep, *region, Access::kRemoteReadWrite);
  // Neither writes memory a peer registered itself natively in UCX 1.13 (tcp
  // emulates every put; shared memory maps only what UCX allocated): the
  // worker then leaves pulls in its receive region (docs/protocol.md "Landing in place").
  EXPECT_FALSE(ep->rma_to_registered()) << ep->describe();
  EXPECT_EQ(ep->rma_native(), GetParam() == transport::TransportKind::kShm) << ep->describe();

  std::vector<uint8_t> expected;
  for (size_t size : kSizes) {
    auto msg = recv_words(*ep);  // peer: "put of `size` done and flushed"
    ASSERT_EQ(msg.size(), 1u);
    ASSERT_EQ(msg[0], size);
    size_t off = offset_for(size);
    expected.resize(size);
    fill_random(expected.data(), size, seed, size);
    size_t wrong = 0;
    for (size_t i = 0; i < size; ++i) wrong += mem[off + i] != expected[i];
    EXPECT_EQ(wrong, 0u) << size << "-byte put at offset " << off;
    for (size_t i = 0; i < off; ++i) ASSERT_EQ(mem[i], kCanary) << "byte before the put was written, size " << size;
    for (size_t i = off + size; i < off + size + 64; ++i)
      ASSERT_EQ(mem[i], kCanary) << "byte after the put was written, size " << size;
    send_words(*ep, {wrong});    // lets the peer read it back with get
    auto got = recv_words(*ep);  // peer: wrong bytes seen by get
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0], 0u) << size << "-byte get read back wrong bytes";
    std::memset(mem + off, kCanary, size);
    send_words(*ep, {1});  // canary restored: the next put may start
  }
  EXPECT_EQ(peer.wait(30s), 0);
}

RDMAPS_TEST_PEER(rma_put_get) {
  PeerSession s(args);
  auto remote = s.import_remote();
  auto src_region = s.context->allocate(64u << 20, Access::kNone);
  std::vector<uint8_t> plain;
  auto back_region = s.context->allocate(64u << 20, Access::kNone);
  int failures = 0;
  for (size_t i = 0; i < kSizes.size(); ++i) {
    size_t size = kSizes[i];
    // Alternate registered and unregistered source buffers.
    bool registered = i % 2 == 0;
    uint8_t* src = registered ? static_cast<uint8_t*>(src_region->data()) : (plain.resize(size), plain.data());
    fill_random(src, size, args.seed, size);
    s.endpoint->put(src, size, *remote, offset_for(size), registered ? src_region.get() : nullptr).wait();
    s.endpoint->flush().wait_for(kSetupTimeout);
    send_words(*s.endpoint, {size});
    if (recv_words(*s.endpoint).at(0) != 0) ++failures;
    auto* back = static_cast<uint8_t*>(back_region->data());
    std::memset(back, 0, size);
    s.endpoint->get(back, size, *remote, offset_for(size), back_region.get()).wait();
    uint64_t wrong = 0;
    for (size_t j = 0; j < size; ++j) wrong += back[j] != src[j];
    send_words(*s.endpoint, {wrong});
    recv_words(*s.endpoint);
  }
  return failures;
}

// Memory the caller registered is where the caller said, wherever it lies:
// 4 bytes off 16-byte alignment, inside a registration already made, or
// adjoining one. UCX 1.13 reports its cache entry's start for such memory
// (rounded down, or the enclosing region's), and a put to offset 0 landed
// that far before the region, over the caller's other data.
TEST_P(RmaTest, APutLandsInCallerMemoryWhereverItLies) {
  std::vector<uint8_t> buffer(3 * 16384, kCanary);
  uint8_t* const outer = buffer.data() + 64;
  auto enclosing = context->register_memory(outer, 16384, Access::kRemoteWrite);
  struct Case {
    const char* what;
    uint8_t* at;
  };
  const Case cases[] = {{"4 bytes off alignment", buffer.data() + 2 * 16384 + 4},
                        {"inside a registration", outer + 4096},
                        {"adjoining a registration", outer + 16384}};
  PeerProcess peer("rma_put_at_zero", GetParam(), port(), seed);
  auto ep = accept();
  for (const Case& c : cases) {
    auto region = context->register_memory(c.at, 256, Access::kRemoteWrite);
    EXPECT_EQ(region->data(), c.at) << c.what;
    send_descriptor(*ep, *region, Access::kRemoteWrite);
    ASSERT_EQ(recv_words(*ep).at(0), 1u) << c.what;  // put and flushed
    size_t wrong = 0, outside = 0;
    for (size_t i = 0; i < 256; ++i) wrong += c.at[i] != static_cast<uint8_t>(i);
    for (size_t i = 0; i < buffer.size(); ++i)
      if ((buffer.data() + i < c.at || buffer.data() + i >= c.at + 256) && buffer[i] != kCanary) ++outside;
    EXPECT_EQ(wrong, 0u) << c.what << ": bytes of the put not in the region";
    EXPECT_EQ(outside, 0u) << c.what << ": bytes outside the region written";
    std::fill_n(c.at, 256, kCanary);
  }
  EXPECT_EQ(peer.wait(30s), 0);
}

RDMAPS_TEST_PEER(rma_put_at_zero) {
  PeerSession s(args);
  std::vector<uint8_t> bytes(256);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i);
  for (int c = 0; c < 3; ++c) {
    auto remote = s.import_remote();
    s.endpoint->put(bytes.data(), bytes.size(), *remote, 0, nullptr).wait();
    s.endpoint->flush().wait_for(kSetupTimeout);
    send_words(*s.endpoint, {1});
  }
  return 0;
}

// Layout of the fence test's region: flag word, then the data block.
constexpr size_t kFenceData = 64 * 1024;
constexpr size_t kFenceWords = kFenceData / 8;
constexpr uint64_t kFenceRounds = 10000;

TEST_P(RmaTest, FlagPutAfterFenceIsNeverSeenBeforeItsData) {
  auto region = context->allocate(64 + kFenceData, Access::kRemoteWrite);
  std::memset(region->data(), 0, region->size());
  auto* flag = reinterpret_cast<std::atomic<uint64_t>*>(region->data());
  auto* data = reinterpret_cast<const volatile uint64_t*>(static_cast<uint8_t*>(region->data()) + 64);
  PeerProcess peer("fence_writer", GetParam(), port(), seed);
  auto ep = accept();
  send_descriptor(*ep, *region, Access::kRemoteWrite);

  uint64_t seen = 0, checks = 0, violations = 0;
  auto deadline = std::chrono::steady_clock::now() + 120s;
  while (seen < kFenceRounds && std::chrono::steady_clock::now() < deadline) {
    context->progress();
    uint64_t f = flag->load(std::memory_order_acquire);
    if (f == seen) continue;
    ASSERT_GT(f, seen) << "flag went backwards";
    seen = f;
    ++checks;
    // Round r writes r into every data word; later rounds only raise them.
    for (size_t w = 0; w < kFenceWords; ++w)
      if (data[w] < f) {
        ++violations;
        break;
      }
  }
  EXPECT_EQ(seen, kFenceRounds) << "the writer did not finish in time";
  EXPECT_EQ(violations, 0u) << "flag visible before its data in " << violations << " of " << checks << " checks";
  EXPECT_EQ(recv_words(*ep).at(0), kFenceRounds);
  EXPECT_EQ(peer.wait(30s), 0);
}

RDMAPS_TEST_PEER(fence_writer) {
  PeerSession s(args);
  auto remote = s.import_remote();
  auto src = s.context->allocate(kFenceData + 8, Access::kNone);
  auto* words = static_cast<uint64_t*>(src->data());
  for (uint64_t round = 1; round <= kFenceRounds; ++round) {
    for (size_t w = 0; w < kFenceWords; ++w) words[w] = round;
    words[kFenceWords] = round;
    transport::Request data = s.endpoint->put(words, kFenceData, *remote, 64, src.get());
    s.endpoint->fence();
    transport::Request flag = s.endpoint->put(&words[kFenceWords], 8, *remote, 0, src.get());
    // Local completion only: the source may be rewritten next round.
    data.wait();
    flag.wait();
  }
  s.endpoint->flush().wait_for(kSetupTimeout);
  send_words(*s.endpoint, {kFenceRounds});
  return 0;
}

RDMAPS_INSTANTIATE_OVER_TRANSPORTS(RmaTest);

}  // namespace
}  // namespace rdmaps::test
