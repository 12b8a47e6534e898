#include "src/ps/gpu_shard.h"

#include <vector>

#include "cuda/device_memory.h"
#include "cuda/gpu_probe.h"
#include "cuda/kernels.h"
#include "rdmaps/error.h"
#include "src/ps/backup_cover.h"

namespace rdmaps::ps {
namespace {

class GpuShardStore final : public ShardStore {
 public:
  GpuShardStore(int device, size_t floats, size_t shard_floats, uint32_t workers, UpdateRule rule)
      : device_(device),
        floats_(floats),
        dc_(math::needs_backup(rule)),
        params_(floats * sizeof(float)),
        gradient_(shard_floats * sizeof(float)),
        backups_(workers),
        copies_(workers, nullptr),
        cover_(workers, floats, shard_floats) {
    params_.fill_bytes(0);
    if (math::needs_state(rule)) {
      state_ = std::make_unique<cuda::DeviceBuffer>(floats * sizeof(float));
      state_->fill_bytes(0);
    }
  }

  void init(size_t local, const float* values, size_t n) override {
    cuda::use_device(device_);
    cuda::copy_to_device(static_cast<float*>(params_.data()) + local, values, n * sizeof(float));
  }

  void attach(uint32_t worker, float* copy) override {
    // The DC backup is allocated now: a device out of memory refuses this
    // worker at admission instead of failing a push of it later.
    cuda::use_device(device_);
    if (dc_) backup(worker);
    copies_.at(worker) = copy;  // arrives zeroed (ShardStore::attach)
    if (dc_) cover_.clear(worker);
  }

  void apply(const math::UpdateParams& p, math::Step step, uint32_t worker, size_t local, const void* g, bool bf16,
             size_t n) override {
    cuda::use_device(device_);
    cuda::copy_to_device(gradient_.data(), g, n * (bf16 ? sizeof(uint16_t) : sizeof(float)));
    float* w = static_cast<float*>(params_.data()) + local;
    float* bak = dc_ ? backup(worker) + local : nullptr;
    // Nothing sent yet: the backup is the parameters themselves (no delay).
    if (dc_ && !cover_.holds(worker, local)) cuda::copy_device(bak, w, n * sizeof(float));
    float* state = state_ ? static_cast<float*>(state_->data()) + local : nullptr;
    if (bf16)
      cuda::update_bf16(p, step, w, static_cast<const uint16_t*>(gradient_.data()), bak, state, n);
    else
      cuda::update(p, step, w, static_cast<const float*>(gradient_.data()), bak, state, n);
    cuda::synchronize(bf16 ? "the GPU shard's update kernel (bf16 gradient)" : "the GPU shard's update kernel");
  }

  void snapshot(uint32_t worker, size_t local, size_t n) override {
    cuda::use_device(device_);
    const float* w = static_cast<const float*>(params_.data()) + local;
    cuda::copy_to_host(copies_[worker] + local, w, n * sizeof(float));
    if (!dc_) return;
    float* bak = backup(worker);
    const float* params = static_cast<const float*>(params_.data());
    cover_.sent(worker, local, n, [&](size_t begin, size_t floats) {
      cuda::copy_device(bak + begin, params + begin, floats * sizeof(float));
    });
    cuda::copy_device(bak + local, w, n * sizeof(float));
  }

  bool has_state() const override { return state_ != nullptr; }

  void save(size_t local, size_t n, float* params, float* state) override {
    cuda::use_device(device_);
    cuda::copy_to_host(params, static_cast<const float*>(params_.data()) + local, n * sizeof(float));
    if (state && state_)
      cuda::copy_to_host(state, static_cast<const float*>(state_->data()) + local, n * sizeof(float));
  }

  void load(size_t local, size_t n, const float* params, const float* state) override {
    cuda::use_device(device_);
    cuda::copy_to_device(static_cast<float*>(params_.data()) + local, params, n * sizeof(float));
    if (state && state_) cuda::copy_to_device(static_cast<float*>(state_->data()) + local, state, n * sizeof(float));
  }

 private:
  float* backup(uint32_t worker) {
    auto& b = backups_.at(worker);
    if (!b) {
      b = std::make_unique<cuda::DeviceBuffer>(floats_ * sizeof(float));
      b->fill_bytes(0);
    }
    return static_cast<float*>(b->data());
  }

  // The GPU current in the Server's constructor: each call runs there,
  // whichever thread makes it (a lane's, or run()'s, is on GPU 0).
  int device_;
  size_t floats_;
  bool dc_;
  cuda::DeviceBuffer params_;
  std::unique_ptr<cuda::DeviceBuffer> state_;
  cuda::DeviceBuffer gradient_;  // one piece, f32 or bf16
  std::vector<std::unique_ptr<cuda::DeviceBuffer>> backups_;
  std::vector<float*> copies_;
  BackupCover cover_;
};

}  // namespace

int require_gpu() {
  cuda::GpuInfo gpus = cuda::probe_gpus();
  if (gpus.device_count() == 0) throw Error(Errc::kUnsupported, "--gpu-shard needs a CUDA device: " + gpus.reason);
  const int device = cuda::current_device();
  try {
    cuda::require_kernels_run_here();
  } catch (const Error& e) {
    throw Error(e.code(), std::string("--gpu-shard: ") + e.what());
  }
  return device;
}

std::unique_ptr<ShardStore> make_gpu_store(int device, size_t floats, size_t shard_floats, uint32_t workers,
                                           UpdateRule rule) {
  // Lanes are made on the thread of the Server's constructor (a resume) or
  // of run() (admission): both allocate on the GPU the constructor saw.
  cuda::use_device(device);
  return std::make_unique<GpuShardStore>(device, floats, shard_floats, workers, rule);
}

}  // namespace rdmaps::ps
