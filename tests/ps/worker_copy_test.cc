// A worker's copy on its way to a lane: memory made zero and faulted in by
// the control thread (HostPages, fault_in), waiting for the lane hello of
// the ticket it was made for (CopyHandoff), and unmapped by the control
// thread once a lane lets go of it (MemoryToFree).
#include "src/ps/worker_copy.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "tests/transport/fixture.h"
#include "transport/context.h"

namespace rdmaps::test {
namespace {

using ps::CopyHandoff;
using ps::HostPages;
using ps::MemoryToFree;

size_t page_size() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// Pages of `h` the kernel has mapped (mincore): what a first touch would not fault in.
size_t resident_pages(const HostPages& h) {
  std::vector<unsigned char> in_core(h.mapped() / page_size());
  EXPECT_EQ(mincore(h.data(), h.mapped(), in_core.data()), 0);
  return static_cast<size_t>(std::count_if(in_core.begin(), in_core.end(), [](unsigned char c) { return c & 1; }));
}

// The VmFlags of the mapping holding `at`, from /proc/self/smaps ("" if none).
std::string vm_flags_at(const void* at) {
  std::ifstream smaps("/proc/self/smaps");
  const auto address = reinterpret_cast<uintptr_t>(at);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &begin, &end) == 2 && line.find(':') > line.find(' '))
      inside = begin <= address && address < end;
    else if (inside && line.rfind("VmFlags:", 0) == 0)
      return line.substr(8);
  }
  return "";
}

// The inverse of fault_in: the whole pages inside the span go, the mapping
// stays and reads zeros (a send UCX still drives may read it).
TEST(HostPages, DiscardedPagesGoBackAndReadZeros) {
  std::vector<HostPages> pages;
  pages.emplace_back(size_t{4} << 20);
  fault_in(pages, 1);
  auto* bytes = static_cast<unsigned char*>(pages[0].data());
  std::fill(bytes, bytes + pages[0].size(), 0x5a);
  ASSERT_EQ(resident_pages(pages[0]), pages[0].mapped() / page_size());
  ps::discard_pages(bytes + 1, pages[0].size() - 1);  // the first page is only partly inside: it stays
  EXPECT_EQ(resident_pages(pages[0]), 1u);
  EXPECT_EQ(bytes[1], 0x5a);
  EXPECT_EQ(bytes[pages[0].size() - 1], 0);
  // Nor does khugepaged fill the span with huge pages of zeros again (it did where the mapping asked for them).
  if (std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled")) {
    EXPECT_TRUE(vm_flags_at(bytes + page_size()).find(" nh") != std::string::npos)
        << "VmFlags:" << vm_flags_at(bytes + page_size());
  }
}

// A departed worker's inbox is given back to the end of what UCX allocated
// for it: in huge pages (tcp), the rest of the 2 MiB page under a 1 MiB
// inbox stayed resident, 1 MiB for every worker killed mid-push; in shared
// memory (shm, and auto, UCX's posix allocation), nothing went at all.
class DiscardedRegion : public testing::TestWithParam<transport::TransportKind> {};

TEST_P(DiscardedRegion, KeepsNoPageToTheEndOfItsAllocation) {
  auto context = transport::create_context({.transport = GetParam()});
  auto region = context->allocate((size_t{1} << 20) + 512, transport::Access::kRemoteWrite);  // an inbox's size
  auto* bytes = static_cast<unsigned char*>(region->data());
  ASSERT_GE(region->allocated(), region->size());
  if (reinterpret_cast<uintptr_t>(bytes) % page_size() != 0)
    GTEST_SKIP() << "UCX allocated the region inside other memory (no huge pages): nothing of its own to give back";
  std::fill(bytes, bytes + region->size(), 0x5a);  // in huge pages, the fault maps the whole 2 MiB
  if (vm_flags_at(bytes).find(" hg") != std::string::npos) {
    EXPECT_EQ(region->allocated() % (size_t{2} << 20), 0u) << "a region in huge pages owns them whole";
  }
  ps::discard_pages(bytes, region->allocated());
  EXPECT_EQ(bytes[region->size() - 1], 0) << "the discarded region still holds what was written";
  std::vector<unsigned char> in_core(region->allocated() / page_size());
  ASSERT_EQ(mincore(bytes, region->allocated(), in_core.data()), 0);
  // The byte read above faulted one page back in.
  EXPECT_LE(std::count_if(in_core.begin(), in_core.end(), [](unsigned char c) { return c & 1; }), 1)
      << "of " << in_core.size() << " pages (allocated " << region->allocated() << " bytes)";
}

RDMAPS_INSTANTIATE_OVER_TRANSPORTS(DiscardedRegion);

TEST(HostPages, AreZeroPageAlignedAndFaultedInOnlyByFaultIn) {
  std::vector<HostPages> pages;
  pages.emplace_back(size_t{40} << 20);  // more than one piece of fault_in()
  pages.emplace_back();                  // a lane that needs none
  pages.emplace_back(100);
  EXPECT_EQ(pages[0].size(), size_t{40} << 20);
  EXPECT_EQ(pages[2].size(), 100u);
  EXPECT_EQ(pages[2].mapped(), page_size());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(pages[0].data()) % (size_t{2} << 20), 0u) << "not where huge pages may go";
  EXPECT_EQ(reinterpret_cast<uintptr_t>(pages[2].data()) % page_size(), 0u);
  EXPECT_EQ(resident_pages(pages[0]), 0u) << "mapping alone faulted pages in";
  ps::fault_in(pages, 2);
  EXPECT_EQ(resident_pages(pages[0]), pages[0].mapped() / page_size());
  EXPECT_EQ(resident_pages(pages[2]), 1u);
  const auto* bytes = static_cast<const unsigned char*>(pages[0].data());
  EXPECT_TRUE(std::all_of(bytes, bytes + pages[0].size(), [](unsigned char b) { return b == 0; }));
  EXPECT_FALSE(pages[1]);
}

TEST(HostPages, MoveAndUnmapOnce) {
  HostPages a(1 << 20);
  void* p = a.data();
  HostPages b(std::move(a));
  EXPECT_FALSE(a);
  EXPECT_EQ(b.data(), p);
  HostPages c(4096);
  c = std::move(b);  // c's own pages unmapped, b's now c's
  EXPECT_EQ(c.data(), p);
  EXPECT_FALSE(b);
  static_cast<char*>(c.data())[(1 << 20) - 1] = 1;
}

std::vector<HostPages> copies_for(size_t lanes) {
  std::vector<HostPages> copies;
  for (size_t l = 0; l < lanes; ++l) copies.emplace_back(4096);
  return copies;
}

TEST(CopyHandoff, EachLaneTakesItsCopyOnceAndOnlyWithTheTicketItWasMadeFor) {
  CopyHandoff handoff;
  EXPECT_FALSE(handoff.take(0, 0)) << "nothing offered yet";
  handoff.offer(7, copies_for(2));
  EXPECT_EQ(handoff.waiting(), 2u);
  EXPECT_FALSE(handoff.take(8, 0)) << "another ticket's lane hello";
  EXPECT_FALSE(handoff.take(0, 0));
  EXPECT_FALSE(handoff.take(7, 2)) << "no such lane";
  HostPages lane1 = handoff.take(7, 1);
  EXPECT_TRUE(lane1);
  EXPECT_FALSE(handoff.take(7, 1)) << "taken twice";
  EXPECT_EQ(handoff.waiting(), 1u);
  // The worker connects again before reaching lane 0: the new ticket's copies
  // replace what the old one left, so at most one per lane waits.
  handoff.offer(9, copies_for(2));
  EXPECT_EQ(handoff.waiting(), 2u);
  EXPECT_FALSE(handoff.take(7, 0)) << "the old ticket's copy outlived its ticket";
  EXPECT_TRUE(handoff.take(9, 0));
  EXPECT_TRUE(lane1) << "a copy taken belongs to its lane, whatever is offered next";
}

// Whether [p, p + bytes) is mapped in this process (mincore refuses unmapped memory).
bool mapped(void* p, size_t bytes) {
  std::vector<unsigned char> in_core((bytes + page_size() - 1) / page_size());
  return mincore(p, bytes, in_core.data()) == 0;
}

TEST(MemoryToFree, HoldsWhatLanesDropUntilTheControlThreadFreesIt) {
  MemoryToFree later;
  later.free_all();  // nothing yet
  HostPages pages(1 << 20);
  void* p = pages.data();
  later.add(std::move(pages));
  later.add(HostPages{});  // nothing to free
  EXPECT_TRUE(mapped(p, 1 << 20)) << "freed by the lane that dropped it";
  later.free_all();
  EXPECT_FALSE(mapped(p, 1 << 20)) << "not freed by free_all()";
  later.add(HostPages(4096));  // what is left is freed with it
}

}  // namespace
}  // namespace rdmaps::test
