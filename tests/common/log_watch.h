// The library's log lines, taken while a LogWatch lives, so that a test waits
// for a line instead of sleeping a fixed time it hopes is long enough (on a
// loaded machine such sleeps ran out first).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>

#include "rdmaps/log.h"

namespace rdmaps::test {

class LogWatch {
 public:
  /// Takes the lines at info and above; each still goes to stderr, for a failing test's log.
  /// It replaces any sink set before (stderr comes back after it): one at a time.
  LogWatch() : level_(log_level()) {
    set_log_level(LogLevel::kInfo);
    set_log_sink([this](LogLevel, const std::string& line) {
      std::fprintf(stderr, "%s\n", line.c_str());
      std::lock_guard<std::mutex> lock(mu_);
      text_ += line + '\n';
      said_.notify_all();
    });
  }
  ~LogWatch() {
    set_log_sink(nullptr);
    set_log_level(level_);
  }
  LogWatch(const LogWatch&) = delete;
  LogWatch& operator=(const LogWatch&) = delete;

  /// Whether a line containing `part` was logged, waiting up to `timeout` for one.
  bool wait_for(const std::string& part, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return said_.wait_for(lock, timeout, [&] { return text_.find(part) != std::string::npos; });
  }
  /// Every line so far, each ending in '\n'.
  std::string text() const {
    std::lock_guard<std::mutex> lock(mu_);
    return text_;
  }

 private:
  const LogLevel level_;
  mutable std::mutex mu_;
  std::condition_variable said_;
  std::string text_;
};

}  // namespace rdmaps::test
