// How much host memory a server says it needs, and what it tells the user
// when the machine has less.
#include "src/ps/memory_plan.h"

#include <gtest/gtest.h>

#include <string>

#include "src/ps/protocol.h"

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

// SGD and momentum over transport auto make no copy over RDMA or shared
// memory: counted as a maybe in the warning, they refused a server that had
// room for the range and an inbox.
TEST(MemoryPlan, ACopyThatDependsOnTheWorkersTransportRefusesNoServer) {
  const uint64_t floats = uint64_t{1} << 28;
  const ps::MemoryPlan plan = ps::server_memory_plan(floats, 2, rule_over(UpdateRule::kSgd, "auto"), false);
  EXPECT_TRUE(plan.copies);
  EXPECT_EQ(plan.per_worker, plan.per_worker_least + floats * 4);
  const transport::AvailableMemory room{plan.fixed() + plan.per_worker_least, "MemAvailable"};
  EXPECT_FALSE(ps::memory_refusal(plan, room, UpdateRule::kSgd));
  EXPECT_TRUE(ps::memory_refusal(plan, {room.bytes - 1, "MemAvailable"}, UpdateRule::kSgd));
  // Over tcp the copy is sure: it counts.
  const ps::MemoryPlan tcp = ps::server_memory_plan(floats, 2, rule_over(UpdateRule::kSgd, "tcp"), false);
  EXPECT_EQ(tcp.per_worker_least, tcp.per_worker);
}

// UCX backs an inbox of 4 slots of 1 MiB and 192 bytes with huge pages over
// tcp: 6 MiB resident, planned as 4 MiB, and a server that said 47 workers
// fit was killed at the 34th.
TEST(MemoryPlan, AnInboxIsCountedInWholeHugePagesWhereUcxMayUseThem) {
  Config tcp = rule_over(UpdateRule::kSgd, "tcp");
  EXPECT_EQ(ps::inbox_bytes(tcp), uint64_t{6} << 20);
  Config shm = rule_over(UpdateRule::kSgd, "shm");
  EXPECT_EQ(ps::inbox_bytes(shm), 4 * ps::SlotLayout{(1u << 18) * 4}.slot_bytes());
  tcp.shard_floats = 1024;  // 4 slots of 4 KiB: below a huge page
  EXPECT_EQ(ps::inbox_bytes(tcp), 4 * ps::SlotLayout{4096}.slot_bytes());
}

// Past what the server had when it started, a worker is refused (for now)
// rather than admitted and the server killed by the kernel as the pages are
// touched; a rejoining id's memory replaces its own, and unknown memory refuses nothing.
TEST(MemoryBudget, AWorkerPastTheMemoryIsRefusedNamingWhatEachPartTakes) {
  ps::MemoryBudget budget(uint64_t{100} << 20, {uint64_t{250} << 20, "the limit of memory cgroup /job"}, 64);
  const uint64_t each = uint64_t{7} << 20;
  const transport::AvailableMemory plenty{uint64_t{1} << 40, "MemAvailable"};
  uint32_t admitted = 0;
  for (; admitted < 64 && budget.refusal(admitted, each, plenty).empty(); ++admitted) budget.promise(admitted, each);
  EXPECT_EQ(admitted, 21u);  // (250 - 100) / 7
  const std::string why = budget.refusal(admitted, each, plenty);
  for (const char* part : {"no memory for worker 21", "it needs 7.3 MB", "104.9 MB for the parameters",
                           "154.1 MB for the 21 workers admitted", "262.1 MB available when its lanes started",
                           "(the limit of memory cgroup /job)", "--servers"})
    EXPECT_NE(why.find(part), std::string::npos) << part << " missing from: " << why;
  EXPECT_EQ(budget.refusal(3, each, plenty), "") << "a rejoining id takes the place of its own memory";
  EXPECT_TRUE(budget.holds(3));
  budget.promise(3, 0);  // it left
  EXPECT_FALSE(budget.holds(3));
  EXPECT_EQ(budget.refusal(admitted, each, plenty), "") << "a worker's memory freed makes room";
  ps::MemoryBudget unknown(uint64_t{1} << 40, {}, 4);
  EXPECT_EQ(unknown.refusal(0, uint64_t{1} << 40, {}), "");
}

// Servers sharing memory (one cgroup, one machine) each budgeted against all
// of it, and the kernel killed one: what is available now counts too.
TEST(MemoryBudget, AWorkerIsRefusedWhereWhatIsAvailableNowIsShort) {
  ps::MemoryBudget budget(uint64_t{100} << 20, {uint64_t{250} << 20, "MemAvailable"}, 8);
  const std::string why = budget.refusal(0, uint64_t{7} << 20, {uint64_t{5} << 20, "MemAvailable"});
  for (const char* part : {"no memory for worker 0", "it needs 7.3 MB",
                           "but only 5.2 MB is available now (MemAvailable)", "another server among them"})
    EXPECT_NE(why.find(part), std::string::npos) << part << " missing from: " << why;
  EXPECT_EQ(budget.refusal(0, uint64_t{7} << 20, {uint64_t{12} << 20, "MemAvailable"}), "");  // 4 MiB to spare
  EXPECT_NE(budget.refusal(0, uint64_t{7} << 20, {uint64_t{10} << 20, "MemAvailable"}), "");
  // What is available now does not show the inboxes of workers admitted that have not pushed: on a loaded
  // machine the next worker was admitted before they were written, and the kernel killed the server.
  budget.promise(1, uint64_t{7} << 20, uint64_t{4} << 20);
  EXPECT_TRUE(budget.untouched(1));
  const std::string pending = budget.refusal(0, uint64_t{7} << 20, {uint64_t{12} << 20, "MemAvailable"});
  EXPECT_NE(pending.find("but of the 12.6 MB available now (MemAvailable) the inboxes of workers admitted will take "
                         "4.2 MB as they push, leaving 8.4 MB"),
            std::string::npos)
      << pending;
  budget.touched(1);
  EXPECT_FALSE(budget.untouched(1));
  EXPECT_EQ(budget.refusal(0, uint64_t{7} << 20, {uint64_t{12} << 20, "MemAvailable"}), "");
}

}  // namespace
}  // namespace rdmaps::test
