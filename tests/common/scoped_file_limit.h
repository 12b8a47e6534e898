// This process's soft limit on open files, lowered for a scope and put back.
#pragma once

#include <sys/resource.h>

#include <cstdint>

namespace rdmaps::test {

class ScopedSoftFileLimit {
 public:
  explicit ScopedSoftFileLimit(uint64_t soft) {
    if (getrlimit(RLIMIT_NOFILE, &saved_) != 0) return;
    rlimit lowered = saved_;
    lowered.rlim_cur = soft;
    lowered_ = (saved_.rlim_max == RLIM_INFINITY || soft < saved_.rlim_max) && setrlimit(RLIMIT_NOFILE, &lowered) == 0;
  }
  ~ScopedSoftFileLimit() { restore(); }
  ScopedSoftFileLimit(const ScopedSoftFileLimit&) = delete;
  ScopedSoftFileLimit& operator=(const ScopedSoftFileLimit&) = delete;

  /// Whether the limit was lowered (false: the hard limit is not above `soft`).
  bool lowered() const { return lowered_; }
  /// The limits before.
  const rlimit& saved() const { return saved_; }
  /// The soft limit now in force.
  static uint64_t soft_now() {
    rlimit r{};
    getrlimit(RLIMIT_NOFILE, &r);
    return r.rlim_cur;
  }
  void restore() {
    if (lowered_) setrlimit(RLIMIT_NOFILE, &saved_);
    lowered_ = false;
  }

 private:
  rlimit saved_{};
  bool lowered_ = false;
};

}  // namespace rdmaps::test
