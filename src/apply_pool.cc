#include "src/apply_pool.h"

#include <algorithm>

#include "src/flush_denormals.h"

namespace rdmaps::ps {

namespace {
constexpr size_t kAlign = 16;            // floats per cache line
constexpr size_t kMinPerThread = 16384;  // below this, one thread is faster than waking others
}  // namespace

ApplyPool::ApplyPool(unsigned threads) {
  for (unsigned i = 1; i < std::max(1u, threads); ++i) helpers_.emplace_back([this, i] { helper(i); });
}

ApplyPool::~ApplyPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_.notify_all();
  for (auto& t : helpers_) t.join();
}

std::pair<size_t, size_t> ApplyPool::part(unsigned index) const {
  size_t per = (n_ / threads() + kAlign - 1) / kAlign * kAlign;
  size_t begin = std::min(n_, index * per);
  return {begin, std::min(n_, begin + per)};
}

void ApplyPool::run(size_t n, const std::function<void(size_t, size_t)>& fn) {
  if (helpers_.empty() || n < kMinPerThread * 2) {
    fn(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    pending_ = static_cast<unsigned>(helpers_.size());
    ++generation_;
  }
  start_.notify_all();
  auto [begin, end] = part(0);
  fn(begin, end);
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&] { return pending_ == 0; });
}

void ApplyPool::helper(unsigned index) {
  FlushDenormals flush;
  uint64_t seen = 0;
  for (;;) {
    std::unique_lock<std::mutex> lock(mu_);
    start_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    auto [begin, end] = part(index);
    const auto* fn = fn_;
    lock.unlock();
    if (begin < end) (*fn)(begin, end);
    lock.lock();
    if (--pending_ == 0) done_.notify_one();
  }
}

}  // namespace rdmaps::ps
