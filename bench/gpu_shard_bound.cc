#include "bench/gpu_shard_bound.h"

#include <vector>

#include "cuda/device_memory.h"
#include "cuda/kernels.h"
#include "src/ps/update_rules.h"

namespace rdmaps::bench {

double gpu_shard_bound_seconds(const math::UpdateParams& params, uint64_t floats, uint32_t workers) {
  const UpdateRule rule = params.rule;
  const size_t bytes = floats * sizeof(float);
  cuda::DeviceBuffer w(bytes), g(bytes), bak(bytes), state(bytes);
  for (auto* b : {&w, &g, &bak, &state}) b->fill_bytes(0);
  // The inbox slots and the worker's copy are host memory UCX allocated, not
  // page-locked for CUDA: time the transfers from plain host memory as well.
  std::vector<float> host(floats, 1e-3f);
  const math::Step step = ps::step_for(params, 1e-3f, 1000);
  auto f = [](const cuda::DeviceBuffer& d) { return static_cast<float*>(d.data()); };
  // Seconds per run of `body`, once warm (CUDA events, as rdmaps-perf gpu times its rows).
  auto seconds = [](auto&& body) {
    body();
    cuda::synchronize();
    return cuda::time_ms(body, 3) * 1e-3 / 3;
  };
  const double to_device = seconds([&] { cuda::copy_to_device(g.data(), host.data(), bytes); });
  const double apply = seconds([&] { cuda::update(params, step, f(w), f(g), f(bak), f(state), floats); });
  const double to_host = seconds([&] { cuda::copy_to_host(host.data(), w.data(), bytes); });
  const double backup =
      math::needs_backup(rule) ? seconds([&] { cuda::copy_device(bak.data(), w.data(), bytes); }) : 0.0;
  return workers * (to_device + apply + to_host + backup);
}

}  // namespace rdmaps::bench
