// Warnings about refused or dropped peers or rejected messages, at most 10
// lines a second: a flood of bad connections or pushes must not flood the log (the rest are counted, and said
// in one line once the second is over).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace rdmaps::ps {

class RefusalLog {
 public:
  /// `who` prefixes each line ("rdmaps-server", "rdmaps-server: lane 2");
  /// `what` names the lines counted past the limit.
  explicit RefusalLog(std::string who, std::string what = "connections refused or closed")
      : who_(std::move(who)), what_(std::move(what)) {}
  /// Writes "who: line" as a warning, or counts it past 10 this second.
  void warn(const std::string& line);
  /// Says how many went uncounted once their second is over: called on a
  /// tick, so that a burst that stopped is still said (it waited for the next line, which may never come).
  void flush();

 private:
  std::string who_;
  std::string what_;
  std::chrono::steady_clock::time_point window_{};
  uint32_t logged_ = 0;
  uint64_t unlogged_ = 0;
};

}  // namespace rdmaps::ps
