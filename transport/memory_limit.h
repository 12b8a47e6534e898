// Memory this process may still take. The kernel's MemAvailable is the
// machine's; a job in a memory cgroup (Slurm's ConstrainRAMSpace, a container,
// systemd's MemoryMax) is killed at its cgroup's limit, usually long before
// the machine runs out. The tighter of the two counts.
#pragma once

#include <cstdint>
#include <string>

namespace rdmaps::transport {

struct AvailableMemory {
  uint64_t bytes = 0;  ///< 0: nothing could be read
  std::string bound;   ///< what sets it: "MemAvailable" or "the limit of memory cgroup /slurm/job_7"
};

/// Where the figures are read (the defaults; tests point them elsewhere).
struct MemorySources {
  std::string meminfo = "/proc/meminfo";
  std::string cgroup = "/proc/self/cgroup";
  std::string mountinfo = "/proc/self/mountinfo";
};

/// The smaller of MemAvailable and, for every memory cgroup from this
/// process's up to the root (v1 or v2), its limit less what it uses that the
/// kernel cannot reclaim (the page cache it may drop is not counted).
AvailableMemory available_memory(const MemorySources& sources = {});

/// This process's resident memory (/proc/self/statm), in bytes; 0 where it cannot be read.
uint64_t resident_bytes();

/// "8.0 GB" (`gb_digits` after the point), or "5.2 MB" below a gigabyte, for messages and tables.
std::string size_text(uint64_t bytes, int gb_digits = 1);

}  // namespace rdmaps::transport
