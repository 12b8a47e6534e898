// Rank 0's roll of a rendezvous (rendezvous.h): who of the world has asked,
// the servers' addresses, and why a missing rank was refused; its answers
// are made of it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rdmaps::launch {

/// "0,2-5,9": `ranks` (ascending) as ranges, short for a world of thousands.
std::string ranges_of(const std::vector<uint32_t>& ranks);

/// Once every rank has asked with every server registered the roll is
/// complete, and stays so.
class RendezvousRoll {
 public:
  RendezvousRoll(uint32_t world, uint32_t servers) : present_(world), processes_(world), addresses_(servers) {}

  bool complete() const { return complete_; }
  /// The process `rank` last asked from ("" before it asked).
  const std::string& process_of(uint32_t rank) const { return processes_[rank]; }
  /// A proven request of `rank` from `process` (a server's with its address,
  /// already checked, else "-"). Returns "" or why `address` cannot be taken.
  std::string arrive(uint32_t rank, const std::string& address, const std::string& process);
  /// A rank whose last connection went before the roll was complete (killed,
  /// or out of its time) is forgotten: a restarted copy registers anew (it
  /// was refused as "registered twice"), and nobody gets a dead address.
  void leave(uint32_t rank);
  /// Kept for the answers to the others while `rank` is missing (one line
  /// each). A request that proved no secret may be anyone's: it never takes
  /// the place of a proven refusal, and is quoted as unproven (any peer
  /// hid the real reason, and ended the wait for late workers, with one).
  void refused(uint64_t rank, const std::string& why, bool proven);
  /// "ok A0,A1,..." or "wait missing R,R-R" with the refusals of missing ranks.
  std::string answer();

 private:
  std::vector<char> present_;           // by rank: asked, and not gone since
  std::vector<std::string> processes_;  // by rank: the process it last asked from
  std::vector<std::string> addresses_;  // by server rank
  size_t present_count_ = 0, registered_ = 0;
  std::map<uint32_t, std::pair<std::string, bool>> refusals_;  // of missing ranks: the latest each, and proven
  std::optional<std::string> missing_;                         // the wait answer's first line, until the roll changes
  bool complete_ = false;
};

}  // namespace rdmaps::launch
