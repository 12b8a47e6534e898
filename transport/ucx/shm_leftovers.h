// UCX's posix shared-memory transport keeps a file in UCX_POSIX_DIR
// (/dev/shm) for each segment. With UCX_POSIX_USE_PROC_LINK=y, UCX 1.13's
// default, it unlinks the file at once (peers map it through
// /proc/<pid>/fd), so nothing outlives its process, SIGKILL included. Where
// that must be off (/proc/<pid>/fd not readable by peers), the files stay
// until freed, and a killed process leaves gigabytes behind: the first
// context of each process removes those that no live process holds.
#pragma once

#include <cstdint>
#include <string>

namespace rdmaps::transport::ucx {

struct ShmSweep {
  uint64_t files = 0, bytes = 0;
};

/// Removes ucx_shm_posix_* files of this user in `dir` that no process has
/// open or mapped and that are older than a few seconds. Never throws.
ShmSweep remove_stale_shm_files(const std::string& dir);
/// Once per process: sweeps UCX_POSIX_DIR (or /dev/shm) and says what it removed.
void sweep_stale_shm_once();

}  // namespace rdmaps::transport::ucx
