#include "bench/apply_bound.h"

#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "math/bf16.h"
#include "src/ps/flush_denormals.h"
#include "src/ps/update_rules.h"

namespace rdmaps::bench {

double apply_bound_seconds(const math::UpdateParams& p, uint64_t floats, uint32_t shard_floats, uint32_t workers,
                           uint32_t threads, bool backup_copy, bool bf16) {
  using Clock = std::chrono::steady_clock;
  const UpdateRule rule = p.rule;
  const uint64_t pieces = (floats + shard_floats - 1) / shard_floats;
  threads = static_cast<uint32_t>(std::clamp<uint64_t>(threads, 1, pieces));
  // Zero-filled here, by one thread, as a server's lanes get memory the constructing
  // thread made; each thread then writes its own part before it is timed.
  std::vector<float> params(floats), state(math::needs_state(rule) ? floats : 0);
  std::vector<std::vector<float>> backups(workers, std::vector<float>(floats));
  std::vector<double> best(threads, 1e30);
  std::barrier sync(threads);
  auto owner = [&](uint32_t t) {
    ps::FlushDenormals flush;
    const uint64_t first = pieces * t / threads, last = pieces * (t + 1) / threads;
    const uint64_t begin = first * shard_floats, end = std::min<uint64_t>(floats, last * shard_floats);
    std::fill(params.begin() + begin, params.begin() + end, 0.5f);
    if (!state.empty()) std::fill(state.begin() + begin, state.begin() + end, 0.0f);
    for (auto& b : backups) std::fill(b.begin() + begin, b.begin() + end, 0.25f);
    std::vector<float> gradient(shard_floats, 1e-3f);  // the inbox slot a piece arrives in
    std::vector<float> scratch(ps::kWidenFloats);      // a bf16 block widened, as a lane has it
    std::vector<uint16_t> wire(bf16 ? shard_floats : 0, math::to_bf16(1e-3f));
    for (int rep = 0; rep < 3; ++rep) {
      sync.arrive_and_wait();
      const auto t0 = Clock::now();
      // In the order an iteration of rdmaps-perf ps brings them: every
      // worker's push, piece by piece, then every worker's pull.
      for (uint32_t w = 0; w < workers; ++w)
        for (uint64_t at = begin; at < end; at += shard_floats) {
          const uint64_t n = std::min<uint64_t>(shard_floats, end - at);
          const math::Step step = ps::step_for(p, 0.01f, rep + 2);
          float* s = state.empty() ? nullptr : state.data() + at;
          if (bf16)
            ps::apply_update_bf16(p, step, params.data() + at, wire.data(), backups[w].data() + at, s, n,
                                  scratch.data());
          else
            ps::apply_update(p, step, params.data() + at, gradient.data(), backups[w].data() + at, s, n);
        }
      for (uint32_t w = 0; w < workers && backup_copy; ++w)
        for (uint64_t at = begin; at < end; at += shard_floats)
          std::memcpy(backups[w].data() + at, params.data() + at,
                      std::min<uint64_t>(shard_floats, end - at) * sizeof(float));
      sync.arrive_and_wait();  // a pass ends when its slowest thread does
      best[t] = std::min(best[t], std::chrono::duration<double>(Clock::now() - t0).count());
    }
  };
  std::vector<std::thread> pool;
  for (uint32_t t = 1; t < threads; ++t) pool.emplace_back(owner, t);
  owner(0);
  for (auto& th : pool) th.join();
  return *std::max_element(best.begin(), best.end());
}

double encode_bf16_seconds(uint64_t floats) {
  using Clock = std::chrono::steady_clock;
  std::vector<float> gradient(floats, 1e-3f), residual(floats, 0.0f);
  std::vector<uint16_t> wire(floats);
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = Clock::now();
    math::compress_bf16(gradient.data(), residual.data(), wire.data(), floats);
    asm volatile("" : : "r"(wire.data()), "r"(residual.data()) : "memory");  // kept and timed
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

}  // namespace rdmaps::bench
