// The table across servers and shards.
#include "src/ps/partition.h"

#include <gtest/gtest.h>

#include "rdmaps/error.h"

namespace rdmaps::ps {
namespace {

// Shard indices are 32-bit on the wire: a count past them was truncated
// silently (a 16 GiB table in shards of 1 float).
TEST(Partition, MoreShardsPerServerThanTheWireCountsAreRefusedNamingTheFlag) {
  EXPECT_NO_THROW(Partition({{"w", kMaxShardsPerServer}}, 1, 1));
  try {
    Partition({{"w", uint64_t{1} << 32}}, 2, 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("2147483648 shards per server"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("raise --shard-floats"), std::string::npos) << e.what();
  }
}

TEST(Partition, RangesAreBalancedContiguousAndCutIntoShards) {
  Partition p({{"a", 1000}, {"b", 2001}}, 3, 300);
  EXPECT_EQ(p.total_floats(), 3001u);
  uint64_t next = 0;
  for (uint32_t s = 0; s < 3; ++s) {
    Range r = p.server_range(s);
    EXPECT_EQ(r.begin, next);
    EXPECT_LE(r.size() - 3001 / 3, 1u) << "servers differ by at most one float";
    next = r.end;
    uint64_t covered = r.begin;
    for (uint32_t k = 0; k < p.shard_count(s); ++k) {
      Range sh = p.shard(s, k);
      EXPECT_EQ(sh.begin, covered);
      EXPECT_LE(sh.size(), 300u);
      covered = sh.end;
    }
    EXPECT_EQ(covered, r.end);
  }
  EXPECT_EQ(next, 3001u);
  EXPECT_EQ(p.tensor("b", "pull").begin, 1000u);
  EXPECT_THROW(p.tensor("c", "pull"), Error);
  EXPECT_THROW(Partition({{"tiny", 1}}, 2, 10), Error);
}

// Tensors are found by name wherever they sit in a table of many, each at the
// offset the sizes before it give; the first of a repeated name (a table no
// client sends: declare() refuses one) is the one found.
TEST(Partition, EveryTensorOfALargeTableIsFoundAtItsOffset) {
  std::vector<TensorDecl> table;
  for (uint64_t i = 0; i < 20000; ++i) table.push_back({"layer" + std::to_string(i) + ".weight", i % 7 + 1});
  table.push_back({"layer3.weight", 5});
  Partition p(table, 3, 64);
  uint64_t offset = 0;
  for (size_t i = 0; i + 1 < table.size(); ++i) {
    const Range r = p.tensor(table[i].name, "pull");
    ASSERT_EQ(r.begin, offset) << table[i].name;
    ASSERT_EQ(r.size(), table[i].floats) << table[i].name;
    offset += table[i].floats;
  }
  EXPECT_EQ(p.tensor("layer3.weight", "pull").size(), 4u);
  try {
    p.tensor("layer20000.weight", "push");
    FAIL() << "no error";
  } catch (const Error& e) {
    // The call, the name, and what was declared instead.
    EXPECT_NE(
        std::string(e.what()).find("push of 'layer20000.weight': no tensor of that name was declared; declared: '" +
                                   table[0].name + "', '" + table[1].name + "'"),
        std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("(" + std::to_string(table.size()) + " in all)"), std::string::npos)
        << e.what();
  }
}

// Every piece of a tensor inside one shard has its own segment number, in
// table order without gaps, on tables whose servers differ by a float and
// whose tensors end inside shards, on shard and server boundaries, or span
// several servers.
TEST(Partition, EachPieceOfATensorInAShardIsOneSegmentNumberedInTableOrder) {
  for (const std::vector<TensorDecl>& table :
       {std::vector<TensorDecl>{{"a", 1000}, {"b", 2001}}, std::vector<TensorDecl>{{"w", 7}},
        std::vector<TensorDecl>{{"a", 3}, {"b", 300}, {"c", 1}, {"d", 1}, {"e", 1699}, {"f", 997}},
        std::vector<TensorDecl>{{"x", 600}, {"y", 600}, {"z", 1}}}) {
    for (uint32_t servers : {1u, 2u, 3u}) {
      for (uint32_t shard_floats : {1u, 7u, 300u, 5000u}) {
        uint64_t total = 0;
        for (const auto& t : table) total += t.floats;
        if (total < servers) continue;
        Partition p(table, servers, shard_floats);
        uint64_t next = 0;
        for (uint32_t i = 0; i < table.size(); ++i) {
          const Range t = p.tensor(i);
          for (uint32_t s = 0; s < servers; ++s) {
            const Range held = overlap(t, p.server_range(s));
            for (uint64_t pos = held.begin; pos < held.end;) {
              const auto k = static_cast<uint32_t>((pos - p.server_range(s).begin) / shard_floats);
              ASSERT_EQ(p.segment(i, s, k), next++)
                  << "tensor " << table[i].name << ", server " << s << " of " << servers << ", shard " << k << " of "
                  << shard_floats << " floats";
              pos = std::min(held.end, p.shard(s, k).end);
            }
          }
        }
        EXPECT_EQ(p.segments(), next);
      }
    }
  }
}

}  // namespace
}  // namespace rdmaps::ps
