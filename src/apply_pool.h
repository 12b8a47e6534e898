// Splits one update over a few persistent threads: each takes a contiguous,
// cache-line-aligned part of the piece, so the pass still streams.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rdmaps::ps {

class ApplyPool {
 public:
  explicit ApplyPool(unsigned threads);  ///< 1 = apply on the caller's thread only
  ~ApplyPool();
  ApplyPool(const ApplyPool&) = delete;
  ApplyPool& operator=(const ApplyPool&) = delete;

  /// Runs fn(begin, end) over [0, n) split into one part per thread; returns when all are done.
  void run(size_t n, const std::function<void(size_t, size_t)>& fn);
  unsigned threads() const { return static_cast<unsigned>(helpers_.size()) + 1; }

 private:
  void helper(unsigned index);
  std::pair<size_t, size_t> part(unsigned index) const;

  std::vector<std::thread> helpers_;
  std::mutex mu_;
  std::condition_variable start_, done_;
  const std::function<void(size_t, size_t)>* fn_ = nullptr;
  size_t n_ = 0;
  uint64_t generation_ = 0;
  unsigned pending_ = 0;
  bool stop_ = false;
};

}  // namespace rdmaps::ps
