#include "bench/gpu_shard_bound.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "cuda/device_memory.h"
#include "cuda/kernels.h"
#include "src/ps/update_rules.h"

namespace rdmaps::bench {

double gpu_shard_bound_seconds(UpdateRule rule, uint64_t floats, uint32_t workers) {
  using Clock = std::chrono::steady_clock;
  const size_t bytes = floats * sizeof(float);
  cuda::DeviceBuffer w(bytes), g(bytes), bak(bytes), state(bytes);
  for (auto* b : {&w, &g, &bak, &state}) b->fill_bytes(0);
  // The inbox slots and the worker's copy are host memory UCX allocated, not
  // page-locked for CUDA: time the transfers from plain host memory as well.
  std::vector<float> host(floats, 1e-3f);
  math::UpdateParams params;
  params.rule = rule;
  const math::Step step = ps::step_for(params, 1e-3f, 1000);
  auto f = [](const cuda::DeviceBuffer& d) { return static_cast<float*>(d.data()); };
  auto best_of_three = [](auto&& body) {
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = Clock::now();
      body();
      cuda::synchronize();
      best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    }
    return best;
  };
  const double to_device = best_of_three([&] { cuda::copy_to_device(g.data(), host.data(), bytes); });
  const double apply = best_of_three([&] { cuda::update(params, step, f(w), f(g), f(bak), f(state), floats); });
  const double to_host = best_of_three([&] { cuda::copy_to_host(host.data(), w.data(), bytes); });
  const double backup =
      math::needs_backup(rule) ? best_of_three([&] { cuda::copy_device(bak.data(), w.data(), bytes); }) : 0.0;
  return workers * (to_device + apply + to_host + backup);
}

}  // namespace rdmaps::bench
