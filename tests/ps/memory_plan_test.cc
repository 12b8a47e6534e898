// How much host memory a server says it needs, and what it tells the user
// when the machine has less.
#include "src/ps/memory_plan.h"

#include <gtest/gtest.h>

#include <string>

namespace rdmaps::test {
namespace {

Config rule_over(UpdateRule rule, const char* transport) {
  Config c;
  c.rule = rule;
  c.transport = transport;
  c.shard_floats = 1 << 18;  // 1 MiB slots
  c.inbox_slots = 4;
  return c;
}

TEST(MemoryPlan, DelayCompensationKeepsACopyPerWorkerPlainSgdOverSharedMemoryDoesNot) {
  const uint64_t floats = uint64_t{1} << 28;  // a 1 GiB range
  const ps::MemoryPlan dc = ps::server_memory_plan(floats, 2, rule_over(UpdateRule::kDcAsgdAdaptive, "shm"), false);
  EXPECT_TRUE(dc.copies);
  EXPECT_EQ(dc.shared, 2 * (uint64_t{1} << 30));  // parameters and mean square
  EXPECT_GT(dc.per_worker, uint64_t{1} << 30);
  EXPECT_LT(dc.per_worker, (uint64_t{1} << 30) + (uint64_t{16} << 20));  // and 2 lanes x 4 slots of 1 MiB
  // On a GPU shard parameters, state and backups are device memory; the host
  // keeps each worker's write-back copy (a plan counting them refused such a server).
  const ps::MemoryPlan gpu = ps::server_memory_plan(floats, 2, rule_over(UpdateRule::kDcAsgdAdaptive, "shm"), true);
  EXPECT_EQ(gpu.shared, 0u);
  EXPECT_EQ(gpu.per_worker, dc.per_worker);
  const ps::MemoryPlan sgd = ps::server_memory_plan(floats, 2, rule_over(UpdateRule::kSgd, "shm"), false);
  EXPECT_FALSE(sgd.copies);
  EXPECT_EQ(sgd.shared, uint64_t{1} << 30);
  EXPECT_LT(sgd.per_worker, uint64_t{16} << 20);
  // Over tcp the write-back path keeps a copy whatever the rule, and so does
  // the active-message path over shared memory, where the server is told it.
  EXPECT_TRUE(ps::server_memory_plan(floats, 2, rule_over(UpdateRule::kSgd, "tcp"), false).copies);
  Config am = rule_over(UpdateRule::kSgd, "shm");
  am.push_path = PushPath::kAm;
  EXPECT_TRUE(ps::server_memory_plan(floats, 2, am, false).copies);
}

TEST(MemoryPlan, AServerShortOfMemorySaysHowManyWorkersFitAndWhy) {
  const ps::MemoryPlan dc =
      ps::server_memory_plan(uint64_t{1} << 28, 2, rule_over(UpdateRule::kDcAsgdAdaptive, "shm"), false);
  const auto warning = ps::memory_warning(dc, 64, transport::AvailableMemory{uint64_t{24} << 30, "MemAvailable"},
                                          UpdateRule::kDcAsgdAdaptive);
  ASSERT_TRUE(warning);
  for (const char* part : {"64 workers need about 71.", "dc-asgd-a keeps a copy", "25.8 GB is available (MemAvailable)",
                           "past about 21 workers", "--servers"})
    EXPECT_NE(warning->find(part), std::string::npos) << part << " missing from: " << *warning;
  EXPECT_FALSE(ps::memory_warning(dc, 16, transport::AvailableMemory{uint64_t{24} << 30, "MemAvailable"},
                                  UpdateRule::kDcAsgdAdaptive));
  // Checkpoints keep a snapshot of parameters and state: 2 GiB more, two workers fewer.
  Config checkpointed = rule_over(UpdateRule::kDcAsgdAdaptive, "shm");
  checkpointed.checkpoint_dir = "/var/lib/rdmaps";
  const ps::MemoryPlan snap = ps::server_memory_plan(uint64_t{1} << 28, 2, checkpointed, false);
  EXPECT_EQ(snap.checkpoint, dc.shared);
  EXPECT_EQ(snap.total(64), dc.total(64) + dc.shared);
  const auto with_snapshot = ps::memory_warning(
      snap, 64, transport::AvailableMemory{uint64_t{24} << 30, "MemAvailable"}, UpdateRule::kDcAsgdAdaptive);
  ASSERT_TRUE(with_snapshot);
  for (const char* part : {"64 workers need about 73.", "2.1 GB for the snapshot checkpoints", "past about 19 workers"})
    EXPECT_NE(with_snapshot->find(part), std::string::npos) << part << " missing from: " << *with_snapshot;
  EXPECT_FALSE(ps::memory_warning(dc, 64, {}, UpdateRule::kDcAsgdAdaptive)) << "unknown memory: nothing to say";
}

// Where not even one worker fits, the server is refused (memory_refusal), not warned.
TEST(MemoryPlan, AServerWithNoRoomForOneWorkerIsRefusedNamingWhatItNeeds) {
  const ps::MemoryPlan dc =
      ps::server_memory_plan(uint64_t{1} << 28, 2, rule_over(UpdateRule::kDcAsgdAdaptive, "shm"), false);
  const transport::AvailableMemory small{uint64_t{3} << 30, "the limit of memory cgroup /slurm/job_7"};
  const auto refusal = ps::memory_refusal(dc, small, UpdateRule::kDcAsgdAdaptive);
  ASSERT_TRUE(refusal);
  for (const char* part :
       {"this server's range and one worker need about 3.2 GB", "dc-asgd-a keeps a copy",
        "3.2 GB is available (the limit of memory cgroup /slurm/job_7)", "not one worker fits", "--servers"})
    EXPECT_NE(refusal->find(part), std::string::npos) << part << " missing from: " << *refusal;
  // Exactly one worker's worth is enough; the warning speaks of the rest.
  EXPECT_FALSE(ps::memory_refusal(dc, {dc.total(1), "MemAvailable"}, UpdateRule::kDcAsgdAdaptive));
  EXPECT_TRUE(ps::memory_refusal(dc, {dc.total(1) - 1, "MemAvailable"}, UpdateRule::kDcAsgdAdaptive));
  EXPECT_FALSE(ps::memory_refusal(dc, {}, UpdateRule::kDcAsgdAdaptive)) << "unknown memory: nothing to say";
}

}  // namespace
}  // namespace rdmaps::test
