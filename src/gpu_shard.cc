#include "src/gpu_shard.h"

#include "cuda/kernels.h"

namespace rdmaps::ps {

GpuShard::GpuShard(size_t floats, size_t shard_floats, uint32_t workers, UpdateRule rule)
    : floats_(floats),
      dc_(needs_backup(rule)),
      params_(floats * sizeof(float)),
      gradient_(shard_floats * sizeof(float)),
      backups_(workers) {
  params_.fill_bytes(0);
  if (needs_state(rule)) {
    state_ = std::make_unique<cuda::DeviceBuffer>(floats * sizeof(float));
    state_->fill_bytes(0);
  }
}

float* GpuShard::backup(uint32_t worker) {
  auto& b = backups_.at(worker);
  if (!b) {
    b = std::make_unique<cuda::DeviceBuffer>(floats_ * sizeof(float));
    b->fill_bytes(0);
  }
  return static_cast<float*>(b->data());
}

void GpuShard::reset_worker(uint32_t worker) {
  if (backups_.at(worker)) backups_[worker]->fill_bytes(0);
}

void GpuShard::init(size_t local, const float* values, size_t n) {
  cuda::copy_to_device(static_cast<float*>(params_.data()) + local, values, n * sizeof(float));
}

void GpuShard::apply(const UpdateParams& p, Step step, uint32_t worker, size_t local, const void* g, bool bf16,
                     size_t n) {
  cuda::copy_to_device(gradient_.data(), g, n * (bf16 ? sizeof(uint16_t) : sizeof(float)));
  float* w = static_cast<float*>(params_.data()) + local;
  const float* bak = dc_ ? backup(worker) + local : nullptr;
  float* state = state_ ? static_cast<float*>(state_->data()) + local : nullptr;
  if (bf16)
    cuda::update_bf16(p, step, w, static_cast<const uint16_t*>(gradient_.data()), bak, state, n);
  else
    cuda::update(p, step, w, static_cast<const float*>(gradient_.data()), bak, state, n);
  cuda::synchronize();
}

void GpuShard::snapshot(uint32_t worker, size_t local, size_t n, float* host) {
  const float* w = static_cast<const float*>(params_.data()) + local;
  cuda::copy_to_host(host, w, n * sizeof(float));
  if (dc_) cuda::copy_device(backup(worker) + local, w, n * sizeof(float));
}

}  // namespace rdmaps::ps
