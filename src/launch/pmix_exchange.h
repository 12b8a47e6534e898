// Server addresses through the launcher's PMIx key-value store (Open MPI's
// mpirun, srun --mpi=pmix): each server puts its address, every process of
// the job joins one fence that collects them, then reads them
// (docs/cluster.md "Launchers").
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "src/launch/placement.h"

namespace rdmaps::launch {

/// Whether this build links PMIx.
bool have_pmix();

/// Puts `address` (servers; empty for workers), joins the fence of every
/// process of the job and returns the servers' addresses in index order.
/// Throws Error naming the PMIx call that failed; Error(kInvalidArgument)
/// when PMIx's rank or job size disagrees with `p`; Error(kTimeout) when not
/// every process reached the fence within `timeout`.
std::vector<std::string> pmix_exchange(const Placement& p, const std::string& address,
                                       std::chrono::milliseconds timeout);

}  // namespace rdmaps::launch
