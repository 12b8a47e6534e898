// launch::detect: rank, size and role from each launcher's variables, and the
// errors that name the variable at fault.
#include "src/launch/placement.h"

#include <gtest/gtest.h>

#include <map>

#include "rdmaps/error.h"
#include "rdmaps_config.h"

namespace rdmaps::launch {
namespace {

using Vars = std::map<std::string, std::string>;

Environment env_of(Vars vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

Vars with_master(Vars v) {
  v.emplace("MASTER_ADDR", "node0");
  v.emplace("MASTER_PORT", "29600");
  return v;
}

std::string error_of(const Vars& vars, uint32_t servers = 0) {
  try {
    detect(env_of(vars), servers);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kInvalidArgument);
    return e.what();
  }
  return "no error";
}

TEST(Placement, NoLauncherVariablesIsNoLaunch) {
  EXPECT_FALSE(detect(env_of({})).has_value());
  EXPECT_FALSE(started_with_others(env_of({})));
}

TEST(Placement, OpenMpiRanksBelowTheServerCountServe) {
  auto p = detect(env_of({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "6"}, {"MASTER_ADDR", "h"}}), 2);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->source, "openmpi");
  EXPECT_TRUE(p->is_server());
  EXPECT_EQ(p->server_index(), 1u);
  p = detect(env_of({{"OMPI_COMM_WORLD_RANK", "4"}, {"OMPI_COMM_WORLD_SIZE", "6"}, {"MASTER_ADDR", "h"}}), 2);
  EXPECT_FALSE(p->is_server());
  EXPECT_EQ(p->worker_index(), 2u);
  EXPECT_EQ(p->num_workers(), 4u);
  EXPECT_EQ(p->describe(), "rank 4 of 6 (OMPI_COMM_WORLD_RANK): worker 2 of 4");
}

TEST(Placement, TorchrunTakesTheRendezvousFromMaster) {
  auto p = detect(env_of(with_master({{"RANK", "2"}, {"WORLD_SIZE", "3"}})));
  EXPECT_EQ(p->source, "torchrun");
  EXPECT_EQ(p->master_addr, "node0");
  EXPECT_EQ(p->master_port, 29600);
  EXPECT_FALSE(p->pmix);
  EXPECT_EQ(p->master_port_var, "MASTER_PORT");
  p = detect(env_of({{"RANK", "2"}, {"WORLD_SIZE", "3"}, {"MASTER_ADDR", "node0"}}));
  EXPECT_EQ(p->master_port, kDefaultMasterPort);
  EXPECT_EQ(p->master_port_var, "the default port (MASTER_PORT unset)");  // messages name what chose it
  p = detect(env_of(with_master({{"RANK", "2"}, {"WORLD_SIZE", "3"}, {"RDMAPS_MASTER_PORT", "29700"}})));
  EXPECT_EQ(p->master_port, 29700);
  EXPECT_EQ(p->master_port_var, "RDMAPS_MASTER_PORT");
}

TEST(Placement, InnermostLauncherWins) {
  // torchrun inside an srun task, RDMAPS_* over everything.
  Vars v = with_master(
      {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"SLURM_STEP_ID", "0"}});
  EXPECT_EQ(detect(env_of(v))->source, "torchrun");
  v["RDMAPS_RANK"] = "0";
  v["RDMAPS_WORLD_SIZE"] = "2";
  EXPECT_EQ(detect(env_of(v))->source, "rdmaps");
  EXPECT_TRUE(detect(env_of(v))->is_server());
}

TEST(Placement, SlurmCountsOnlyInATaskSrunStarted) {
  // A batch script sees SLURM_PROCID=0 and the job's task count, but no step.
  Vars batch = {{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_LAUNCH_NODE_IPADDR", "10.0.0.7"}};
  EXPECT_FALSE(detect(env_of(batch)).has_value());
  EXPECT_FALSE(started_with_others(env_of(batch)));
  batch["SLURM_STEP_ID"] = "0";
  auto p = detect(env_of(batch));
  EXPECT_EQ(p->source, "slurm");
  EXPECT_EQ(p->master_addr, "10.0.0.7");
  EXPECT_TRUE(started_with_others(env_of(batch)));
}

// Task 0 runs on the step's first node; srun's launch node may be a login
// node outside the allocation (every rank waited there until its timeout).
TEST(Placement, UnderSrunTheRendezvousIsOnTheStepsFirstNode) {
  Vars step = {{"SLURM_PROCID", "1"},
               {"SLURM_NTASKS", "3"},
               {"SLURM_STEP_ID", "0"},
               {"SLURM_JOB_ID", "41"},
               {"SLURM_LAUNCH_NODE_IPADDR", "10.0.0.7"}};
  for (const auto& [list, first] : std::vector<std::pair<std::string, std::string>>{{"node[3-4]", "node3"},
                                                                                    {"node[07,9-12],gpu1", "node07"},
                                                                                    {"rack[2-3]-n[01-04]", "rack2-n01"},
                                                                                    {"login5,c1", "login5"},
                                                                                    {"c1", "c1"}}) {
    step["SLURM_STEP_NODELIST"] = list;
    auto p = detect(env_of(step));
    EXPECT_EQ(p->master_addr, first) << list;
    EXPECT_EQ(p->master_addr_var, "SLURM_STEP_NODELIST");
  }
  step["MASTER_ADDR"] = "head";
  EXPECT_EQ(detect(env_of(step))->master_addr, "head");  // given: it wins
}

// srun -E keeps the job's SLURM_NTASKS in a step of fewer tasks: the server
// waited for workers that did not exist.
TEST(Placement, ASlurmStepCountsItsOwnTasks) {
  Vars step = {{"SLURM_PROCID", "3"},
               {"SLURM_NTASKS", "8"},
               {"SLURM_STEP_NUM_TASKS", "4"},
               {"SLURM_STEP_ID", "0"},
               {"SLURM_LAUNCH_NODE_IPADDR", "h"}};
  auto p = detect(env_of(step));
  EXPECT_EQ(p->world_size, 4u);
  step["SLURM_PROCID"] = "5";
  EXPECT_NE(error_of(step).find("SLURM_PROCID=5 is not below SLURM_STEP_NUM_TASKS=4"), std::string::npos)
      << error_of(step);
  EXPECT_THROW(started_with_others(env_of(step)), Error);
}

TEST(Placement, TheLaunchIdTellsJobsApartAndSlurmStepsGetPortsOfTheirOwn) {
  Vars step = {{"SLURM_PROCID", "1"},
               {"SLURM_NTASKS", "3"},
               {"SLURM_STEP_ID", "0"},
               {"SLURM_JOB_ID", "41"},
               {"SLURM_LAUNCH_NODE_IPADDR", "10.0.0.7"}};
  auto a = detect(env_of(step));
  EXPECT_EQ(a->launch_id, "slurm:41.0");
  step["SLURM_STEP_ID"] = "1";
  auto b = detect(env_of(step));
  EXPECT_EQ(b->launch_id, "slurm:41.1");
  for (const auto& p : {a, b}) {
    EXPECT_GE(p->master_port, kDefaultMasterPort);
    EXPECT_LT(p->master_port, kDefaultMasterPort + 1000);
  }
  EXPECT_NE(a->master_port, b->master_port);
  EXPECT_EQ(a->master_port_var, "the port of the Slurm job and step (MASTER_PORT unset)");
  EXPECT_EQ(detect(env_of(step))->master_port, b->master_port);  // every rank of a step computes the same
  step["MASTER_PORT"] = "29700";
  EXPECT_EQ(detect(env_of(step))->master_port, 29700);  // given: it wins
  step["RDMAPS_JOB_ID"] = "  run 7 ";
  EXPECT_EQ(detect(env_of(step))->launch_id, "run 7");
  // Launches of one step told apart by RDMAPS_JOB_ID get ports of their own too
  // (they shared the default, and the second's rank 0 could not host).
  step.erase("MASTER_PORT");
  const uint16_t run7 = detect(env_of(step))->master_port;
  step["RDMAPS_JOB_ID"] = "run 8";
  EXPECT_NE(run7, kDefaultMasterPort);
  EXPECT_NE(detect(env_of(step))->master_port, run7);
  step["RDMAPS_JOB_ID"] = "  run 7 ";
  // torchrun's "none" (no --rdzv-id) tells nothing; nor does a launch without any id.
  Vars torchrun = with_master({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"TORCHELASTIC_RUN_ID", "none"}});
  EXPECT_EQ(detect(env_of(torchrun))->launch_id, "");
  torchrun["TORCHELASTIC_RUN_ID"] = "a1b2";
  EXPECT_EQ(detect(env_of(torchrun))->launch_id, "torchrun:a1b2");
  EXPECT_EQ(detect(env_of(torchrun))->master_port, 29600);  // only a Slurm step's default moves
  // srun --mpi=pmi2 gives PMI_RANK too, which wins over SLURM_PROCID: the step's port all the same.
  Vars pmi2 = {{"PMI_RANK", "1"},
               {"PMI_SIZE", "3"},
               {"SLURM_PROCID", "1"},
               {"SLURM_NTASKS", "3"},
               {"SLURM_STEP_NUM_TASKS", "3"},
               {"SLURM_STEP_ID", "0"},
               {"SLURM_JOB_ID", "41"},
               {"SLURM_LAUNCH_NODE_IPADDR", "10.0.0.7"}};
  EXPECT_EQ(detect(env_of(pmi2))->source, "pmi");
  EXPECT_EQ(detect(env_of(pmi2))->master_port, a->master_port);
  pmi2["SLURM_STEP_ID"] = "1";
  EXPECT_EQ(detect(env_of(pmi2))->master_port, b->master_port);
}

// mpirun inside an allocation (no PMIx build): the ranks on its node inherit
// the shell's step, those elsewhere the step of the daemon mpirun started with
// srun. Each hosted or dialled a rendezvous of its own step's first node and
// port, 120 s later an error blamed MASTER_PORT.
TEST(Placement, MpirunInsideAnAllocationDoesNotTakeSlurmsStepForItsOwn) {
  Vars here = {{"OMPI_COMM_WORLD_RANK", "0"},           {"OMPI_COMM_WORLD_SIZE", "4"}, {"SLURM_JOB_ID", "41"},
               {"SLURM_STEP_ID", "4294967290"},         {"SLURM_STEP_NUM_TASKS", "1"}, {"SLURM_STEP_NODELIST", "nodeA"},
               {"SLURM_LAUNCH_NODE_IPADDR", "10.0.0.7"}};
  Vars there = here;
  there["OMPI_COMM_WORLD_RANK"] = "2";
  there["SLURM_STEP_ID"] = "0";
  there["SLURM_STEP_NODELIST"] = "nodeB";
  for (const Vars& v : {here, there}) {
    const std::string e = error_of(v);
    EXPECT_NE(e.find("no rendezvous address"), std::string::npos) << e;
    EXPECT_NE(e.find("is not the Slurm step's"), std::string::npos) << e;
  }
  auto a = detect(env_of(with_master(here))), b = detect(env_of(with_master(there)));
  EXPECT_EQ(a->launch_id, b->launch_id);
  EXPECT_EQ(a->launch_id, "");
  EXPECT_EQ(a->master_port, b->master_port);
  EXPECT_EQ(a->master_addr, b->master_addr);
  // Without MASTER_PORT both take the default, not a port of their own step each.
  for (const Vars& v : {here, there}) {
    Vars given = with_master(v);
    given.erase("MASTER_PORT");
    auto p = detect(env_of(given));
    EXPECT_EQ(p->master_port, kDefaultMasterPort);
    EXPECT_EQ(p->master_port_var, "the default port (MASTER_PORT unset)");
  }
  // SLURM_NTASKS is the allocation's count, mpirun's default -np: no step's.
  Vars allocation = here;
  allocation.erase("SLURM_STEP_NUM_TASKS");
  allocation["SLURM_NTASKS"] = "4";
  EXPECT_EQ(detect(env_of(with_master(allocation)))->launch_id, "");
  // srun --mpi=pmi2 (the step's world): Slurm's step names the launch as before.
  Vars pmi2 = {{"PMI_RANK", "1"},
               {"PMI_SIZE", "4"},
               {"SLURM_JOB_ID", "41"},
               {"SLURM_STEP_ID", "3"},
               {"SLURM_STEP_NUM_TASKS", "4"},
               {"SLURM_STEP_NODELIST", "node[3-4]"}};
  auto p = detect(env_of(pmi2));
  EXPECT_EQ(p->launch_id, "slurm:41.3");
  EXPECT_EQ(p->master_addr, "node3");
  // torchrun inside srun: its ranks all live in the step, whatever their count.
  Vars torchrun = {{"RANK", "5"},          {"WORLD_SIZE", "8"},           {"SLURM_JOB_ID", "41"},
                   {"SLURM_STEP_ID", "3"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_STEP_NODELIST", "node[3-4]"}};
  EXPECT_EQ(detect(env_of(torchrun))->launch_id, "slurm:41.3");
}

TEST(Placement, OneProcessAloneIsNotALaunchedJob) {
  EXPECT_FALSE(started_with_others(env_of({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "1"}})));
  EXPECT_TRUE(started_with_others(env_of({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}})));
}

// RANK=0 WORLD_SIZE=1 left in the shell (single-GPU torch scripts export it)
// under a launcher that started several: every rank ran a job of its own.
TEST(Placement, ALoneRankPairUnderALauncherOfSeveralIsRefusedNamingBoth) {
  const Vars left = {{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}};
  std::string what;
  try {
    started_with_others(env_of(left));
  } catch (const Error& e) {
    what = e.what();
  }
  EXPECT_NE(what.find("RANK and WORLD_SIZE=1 say this process runs alone, but OMPI_COMM_WORLD_SIZE=2 says its "
                      "launcher started 2"),
            std::string::npos)
      << what;
  EXPECT_NE(error_of(left).find("unset RANK and WORLD_SIZE"), std::string::npos) << error_of(left);
  const Vars srun = {{"RDMAPS_RANK", "0"},  {"RDMAPS_WORLD_SIZE", "1"},    {"SLURM_PROCID", "1"},
                     {"SLURM_NTASKS", "2"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_STEP_ID", "0"}};
  EXPECT_THROW(started_with_others(env_of(srun)), Error);
  // torchrun's own pair (one process per outer rank) and a launcher of one are runs alone.
  Vars torchrun = left;
  torchrun["TORCHELASTIC_RUN_ID"] = "none";
  EXPECT_FALSE(started_with_others(env_of(torchrun)));
  EXPECT_FALSE(started_with_others(
      env_of({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "1"}})));
}

// Counts past what a server takes, named by the variable they came from: the
// server named its option (--workers), which nobody gave, and only rank 0 said so.
TEST(Placement, AWorldOrServerCountPastTheLimitNamesItsVariable) {
  EXPECT_NE(error_of(with_master({{"RANK", "0"}, {"WORLD_SIZE", "5000000"}}))
                .find("WORLD_SIZE=5000000 leaves 4999999 workers beside 1 server(s); a job has at most 4096"),
            std::string::npos)
      << error_of(with_master({{"RANK", "0"}, {"WORLD_SIZE", "5000000"}}));
  EXPECT_NE(error_of(with_master({{"RANK", "0"}, {"WORLD_SIZE", "6000"}, {"RDMAPS_NUM_SERVERS", "5000"}}))
                .find("RDMAPS_NUM_SERVERS=5000 is above 4096"),
            std::string::npos);
  // The count a caller passes (rdmaps.launcher.detect(num_servers=...)) was taken past the limit.
  EXPECT_NE(error_of(with_master({{"RANK", "0"}, {"WORLD_SIZE", "6000"}}), 5000).find("5000 servers are above 4096"),
            std::string::npos)
      << error_of(with_master({{"RANK", "0"}, {"WORLD_SIZE", "6000"}}), 5000);
}

TEST(Placement, ExplicitServerListNeedsNoRendezvous) {
  auto p = detect(env_of({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"RDMAPS_SERVERS", "a:1,b:2"}}));
  EXPECT_EQ(p->num_servers, 2u);
  EXPECT_EQ(p->servers, (std::vector<std::string>{"a:1", "b:2"}));
  EXPECT_EQ(p->worker_index(), 1u);
  EXPECT_TRUE(p->master_addr.empty());
}

TEST(Placement, PmixNeedsNoMasterAddress) {
  Vars v = {
      {"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "3"}, {"PMIX_RANK", "1"}, {"PMIX_NAMESPACE", "job.1"}};
  if (RDMAPS_HAVE_PMIX) {
    auto p = detect(env_of(v));
    EXPECT_TRUE(p->pmix);
    EXPECT_TRUE(p->master_addr.empty());
  } else {
    EXPECT_NE(error_of(v).find("MASTER_ADDR"), std::string::npos);
  }
}

TEST(Placement, ErrorsNameTheVariable) {
  const std::pair<Vars, std::string> cases[] = {
      {{{"RANK", "1"}}, "RANK is set but WORLD_SIZE is not"},
      {{{"WORLD_SIZE", "2"}}, "WORLD_SIZE is set but RANK is not"},
      {with_master({{"RANK", "x"}, {"WORLD_SIZE", "2"}}), "RANK='x' is not an integer"},
      {with_master({{"RANK", "-1"}, {"WORLD_SIZE", "2"}}), "RANK='-1' is negative"},
      {with_master({{"RANK", "2"}, {"WORLD_SIZE", "2"}}), "RANK=2 is not below WORLD_SIZE=2"},
      {with_master({{"RANK", "0"}, {"WORLD_SIZE", "4294967297"}}), "WORLD_SIZE=4294967297 is above"},
      {with_master({{"RANK", "0"}, {"WORLD_SIZE", "1"}}), "leaves no worker"},
      {{{"RANK", "1"}, {"WORLD_SIZE", "2"}}, "no rendezvous address"},
      {with_master({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}), "MASTER_PORT=70000"},
      {{{"RANK", "1"}, {"WORLD_SIZE", "3"}, {"RDMAPS_SERVERS", "nohostport"}}, "'nohostport' is not host:port"},
      {{{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"RDMAPS_SERVERS", "a:1"}, {"RDMAPS_NUM_SERVERS", "2"}},
       "lists 1 servers but the job has 2"},
      {{{"SLURM_PROCID", "0"},
        {"SLURM_NTASKS", "4"},
        {"SLURM_STEP_ID", "0"},
        {"PMIX_RANK", "2"},
        {"PMIX_NAMESPACE", "slurm.pmix.1.0"},
        {"MASTER_ADDR", "h"}},
       "two launchers disagree about this process: PMIx says rank 2 of 4 (PMIX_RANK, SLURM_NTASKS), SLURM_PROCID "
       "says rank 0 of 4"},
      // RANK=0 WORLD_SIZE=4 left in the shell under mpirun -np 3: the error blamed the missing MASTER_ADDR only.
      {{{"RANK", "0"},
        {"WORLD_SIZE", "4"},
        {"OMPI_COMM_WORLD_RANK", "1"},
        {"OMPI_COMM_WORLD_SIZE", "3"},
        {"PMIX_RANK", "1"},
        {"PMIX_NAMESPACE", "prterun-host-1@1"}},
       "no rendezvous address: set MASTER_ADDR (rank 0's host) and MASTER_PORT, list the servers in RDMAPS_SERVERS, "
       "or start under a launcher with PMIx (mpirun, srun --mpi=pmix); RANK gives world size 4, PMIx's launcher 3 "
       "(OMPI_COMM_WORLD_SIZE), so this is taken for a launcher started inside it, whose ranks meet at MASTER_ADDR; "
       "exported by hand or left from another launch? unset RANK and its world size"},
      {with_master({{"RDMAPS_RANK", " -1"}, {"RDMAPS_WORLD_SIZE", "2"}}), "RDMAPS_RANK=' -1' is negative"},
      {with_master({{"RANK", "1"}, {"WORLD_SIZE", "2x"}}), "WORLD_SIZE='2x' is not an integer"},
      {with_master({{"RANK", "1"}, {"WORLD_SIZE", "99999999999999999999"}}),
       "WORLD_SIZE=99999999999999999999 is above 4294967295"},
  };
  for (const auto& [vars, message] : cases) {
    const std::string what = error_of(vars);
    EXPECT_NE(what.find(message), std::string::npos) << "expected '" << message << "' in: " << what;
  }
  // More servers than ranks: the count from the caller (--servers).
  EXPECT_NE(error_of(with_master({{"RANK", "0"}, {"WORLD_SIZE", "2"}}), 2).find("leaves no worker beside 2 server"),
            std::string::npos);
}

// rdmaps.launch or torchrun started under mpirun -np 1 (or srun --mpi=pmix):
// the innermost launcher's RANK/WORLD_SIZE describe the process and PMIx,
// which knows the outer job only, carries nothing: every rank of the inner
// launch shares the outer process's PMIx rank. Before, pmix was set and the
// exchange stopped with "PMIx says rank 0 of 1, RANK says rank 1 of 2".
TEST(Placement, ALauncherInsideAPmixLaunchDescribesItsProcesses) {
  Vars v = with_master({{"RANK", "1"},
                        {"WORLD_SIZE", "2"},
                        {"OMPI_COMM_WORLD_RANK", "0"},
                        {"OMPI_COMM_WORLD_SIZE", "1"},
                        {"PMIX_RANK", "0"},
                        {"PMIX_NAMESPACE", "prterun-host-1@1"}});
  auto p = detect(env_of(v));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->source, "torchrun");
  EXPECT_EQ(p->rank, 1u);
  EXPECT_EQ(p->world_size, 2u);
  EXPECT_FALSE(p->pmix);
  EXPECT_EQ(p->master_addr, "node0");  // the rendezvous, whatever this build links
  // torchrun with 4 processes in each of 2 srun --mpi=pmix tasks.
  Vars slurm = with_master({{"RANK", "5"},
                            {"WORLD_SIZE", "8"},
                            {"SLURM_PROCID", "1"},
                            {"SLURM_NTASKS", "2"},
                            {"SLURM_STEP_ID", "0"},
                            {"PMIX_RANK", "1"},
                            {"PMIX_NAMESPACE", "slurm.pmix.7.0"}});
  p = detect(env_of(slurm));
  EXPECT_EQ(p->rank, 5u);
  EXPECT_FALSE(p->pmix);
  // RDMAPS_RANK/RDMAPS_WORLD_SIZE are read by the same rule.
  v.erase("RANK");
  v.erase("WORLD_SIZE");
  v["RDMAPS_RANK"] = "1";
  v["RDMAPS_WORLD_SIZE"] = "2";
  EXPECT_FALSE(detect(env_of(v))->pmix);
  // torchrun with one process per srun task: the same world size, but torchrun
  // numbers its ranks itself (it was refused as two launchers disagreeing,
  // with the advice to unset RANK).
  Vars one_each = with_master({{"RANK", "2"},
                               {"WORLD_SIZE", "4"},
                               {"SLURM_PROCID", "1"},
                               {"SLURM_NTASKS", "4"},
                               {"SLURM_STEP_ID", "0"},
                               {"PMIX_RANK", "1"},
                               {"PMIX_NAMESPACE", "slurm.pmix.7.0"}});
  EXPECT_NE(error_of(one_each).find("two launchers disagree"), std::string::npos);  // without torchrun's mark
  one_each["TORCHELASTIC_RUN_ID"] = "none";
  p = detect(env_of(one_each));
  EXPECT_EQ(p->rank, 2u);
  EXPECT_FALSE(p->pmix);
}

// RANK with PMIx's world size describes PMIx's job: it must agree with PMIx
// (a RANK exported by hand under mpirun -x RANK=0 does not), and then PMIx
// carries the addresses.
TEST(Placement, RankOfThePmixJobMustAgreeWithPmix) {
  Vars v = {{"RANK", "0"},
            {"WORLD_SIZE", "3"},
            {"OMPI_COMM_WORLD_RANK", "1"},
            {"OMPI_COMM_WORLD_SIZE", "3"},
            {"PMIX_RANK", "1"},
            {"PMIX_NAMESPACE", "prterun-host-1@1"},
            {"MASTER_ADDR", "h"}};
  const std::string what = error_of(v);
  EXPECT_NE(what.find("two launchers disagree about this process: PMIx says rank 1 of 3 (PMIX_RANK, "
                      "OMPI_COMM_WORLD_SIZE), RANK says rank 0 of 3"),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("unset RANK"), std::string::npos) << what;
  v["RANK"] = "1";
  auto p = detect(env_of(v));
  EXPECT_EQ(p->source, "torchrun");
  EXPECT_TRUE(p->pmix);
}

// The same without PMIx (srun --mpi=none or pmi2, MPICH): a RANK left in the
// shell with the launcher's world size made every task that rank, and the
// others were told a rendezvous host that was not theirs.
TEST(Placement, RankOfTheLaunchersJobMustAgreeWithItWithoutPmix) {
  for (const auto& [rank_var, size_var, step] : {std::tuple{"SLURM_PROCID", "SLURM_NTASKS", true},
                                                 {"PMI_RANK", "PMI_SIZE", false},
                                                 {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", false}}) {
    Vars v = {{"RANK", "0"}, {"WORLD_SIZE", "4"}, {rank_var, "2"}, {size_var, "4"}, {"MASTER_ADDR", "h"}};
    if (step) v["SLURM_STEP_ID"] = "0";
    const std::string what = error_of(v);
    EXPECT_NE(what.find(std::string("two launchers disagree about this process: ") + rank_var +
                        " says rank 2 of 4, RANK says rank 0 of 4"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("unset RANK"), std::string::npos) << what;
    v["RANK"] = "2";  // agreeing: the inner names the process
    EXPECT_EQ(detect(env_of(v))->rank, 2u) << rank_var;
    v["RANK"] = "0";
    v["WORLD_SIZE"] = "2";  // another size: a launcher started inside it
    EXPECT_EQ(detect(env_of(v))->rank, 0u) << rank_var;
  }
  // torchrun numbers its ranks itself.
  Vars torchrun = {{"RANK", "0"},         {"WORLD_SIZE", "4"},    {"SLURM_PROCID", "2"},
                   {"SLURM_NTASKS", "4"}, {"SLURM_STEP_ID", "0"}, {"TORCHELASTIC_RUN_ID", "none"},
                   {"MASTER_ADDR", "h"}};
  EXPECT_EQ(detect(env_of(torchrun))->rank, 0u);
}

// Every RDMAPS_SERVERS entry is a server's own host:port, as typed: before,
// port 0 and duplicates were taken, empty entries dropped (shifting the
// indices), ',' read as no list at all and port 70000 or spaces failed later
// without naming the variable.
TEST(Placement, EveryServerListEntryIsChecked) {
  const std::pair<std::string, std::string> cases[] = {
      {"a:0,b:2", "RDMAPS_SERVERS entry 1 'a:0' has port 0"},
      {"a:1,b:70000", "RDMAPS_SERVERS entry 2 'b:70000' has port 70000, above 65535"},
      {"a:1,b:2,a:1", "RDMAPS_SERVERS: 'a:1' is listed twice (entries 1 and 3)"},
      {"a:1,,b:2", "RDMAPS_SERVERS='a:1,,b:2': entry 2 is empty"},
      {"a:1,", "RDMAPS_SERVERS='a:1,': entry 2 is empty"},
      {",", "RDMAPS_SERVERS=',': entry 1 is empty"},
      {" a:1,b:2", "RDMAPS_SERVERS entry 1 ' a:1' has white space"},
      {"a:1,b:2 ", "RDMAPS_SERVERS entry 2 'b:2 ' has white space"},
      {"::1:5,b:2", "RDMAPS_SERVERS entry 1 '::1:5' is not host:port (an IPv6 address goes in brackets"},
      {"[]:5,b:2", "RDMAPS_SERVERS entry 1 '[]:5' is not host:port"},
      // One server in two spellings passed as two ("above 65535" for a port in range).
      {"a:013337,b:2", "RDMAPS_SERVERS entry 1 'a:013337' has port 013337 with a leading zero: give it as 13337"},
      {"a:80,a:080", "RDMAPS_SERVERS entry 2 'a:080' has port 080 with a leading zero"},
  };
  for (const auto& [list, message] : cases) {
    const std::string what = error_of({{"RANK", "2"}, {"WORLD_SIZE", "3"}, {"RDMAPS_SERVERS", list}});
    EXPECT_NE(what.find(message), std::string::npos) << list << ": expected '" << message << "' in: " << what;
  }
  auto p = detect(env_of({{"RANK", "2"}, {"WORLD_SIZE", "3"}, {"RDMAPS_SERVERS", "[::1]:7001,b:65535"}}));
  EXPECT_EQ(p->servers, (std::vector<std::string>{"[::1]:7001", "b:65535"}));
  // Set but empty is unset, like MASTER_ADDR.
  EXPECT_EQ(detect(env_of(with_master({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"RDMAPS_SERVERS", ""}})))->master_addr,
            "node0");
}

// A launch of one process runs alone, but not on an invalid pair: before,
// RDMAPS_RANK=5 RDMAPS_WORLD_SIZE=1 and WORLD_SIZE=1x were ignored without a
// word (strtoull read "1x" as 1).
TEST(Placement, StartedWithOthersRefusesAnInvalidPair) {
  const std::pair<Vars, std::string> cases[] = {
      {{{"RDMAPS_RANK", "5"}, {"RDMAPS_WORLD_SIZE", "1"}}, "RDMAPS_RANK=5 is not below RDMAPS_WORLD_SIZE=1"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "1x"}}, "WORLD_SIZE='1x' is not an integer"},
      {{{"RANK", " -1"}, {"WORLD_SIZE", "1"}}, "RANK=' -1' is negative"},
      {{{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "0"}}, "OMPI_COMM_WORLD_SIZE=0 is below 1"},
  };
  for (const auto& [vars, message] : cases) {
    try {
      const bool others = started_with_others(env_of(vars));
      ADD_FAILURE() << "accepted (started_with_others " << others << "), expected '" << message << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(started_with_others(env_of({{"RDMAPS_RANK", "0"}, {"RDMAPS_WORLD_SIZE", "1"}})));
}

// Metrics ports of a launch: the port given plus the rank.
TEST(Placement, MetricsPortPlusRank) {
  EXPECT_EQ(port_plus("0.0.0.0:9464", 3, "--metrics"), "0.0.0.0:9467");
  EXPECT_EQ(port_plus("[::1]:9464", 0, "--metrics"), "[::1]:9464");
  for (const char* bad : {"nohost", "h:", "h:0", "h:x", "h:70000"}) {
    try {
      port_plus(bad, 1, "--metrics");
      ADD_FAILURE() << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--metrics"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(port_plus("h:65535", 1, "--metrics"), Error);
  try {  // it used to say "--metrics=0 is below 1" where the docs promise a free port for port 0
    port_plus("127.0.0.1:0", 2, "--metrics");
    ADD_FAILURE() << "port 0 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--metrics: port 0 picks a free port for one process, but each process of "
                                         "this run serves on PORT plus its offset"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace rdmaps::launch
