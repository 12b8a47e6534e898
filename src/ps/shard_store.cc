#include "src/ps/shard_store.h"

#include <algorithm>
#include <cstring>
#include <span>
#include <vector>

#include "src/ps/backup_cover.h"

namespace rdmaps::ps {
namespace {

class HostShardStore final : public ShardStore {
 public:
  HostShardStore(transport::Context& context, size_t floats, size_t shard_floats, uint32_t workers, UpdateRule rule)
      : region_(context.allocate(std::max<size_t>(floats * sizeof(float), 64), transport::Access::kNone)),
        params_(static_cast<float*>(region_->data()), floats),
        dc_(math::needs_backup(rule)),
        copies_(workers, nullptr),
        cover_(workers, floats, shard_floats) {
    std::fill(params_.begin(), params_.end(), 0.0f);
    if (math::needs_state(rule)) state_.assign(floats, 0.0f);
    scratch_.assign(kWidenFloats, 0.0f);
  }

  void init(size_t local, const float* values, size_t n) override {
    std::memcpy(params_.data() + local, values, n * sizeof(float));
  }

  void attach(uint32_t worker, float* copy) override {
    // The copy is the worker's backup here, and arrives zeroed; what it holds
    // counts only once sent (cover_): clearing it again would be a pass over
    // the whole range on the lane, for nothing.
    copies_.at(worker) = copy;
    if (dc_) cover_.clear(worker);
  }

  void apply(const math::UpdateParams& p, math::Step step, uint32_t worker, size_t local, const void* g, bool bf16,
             size_t n) override {
    float* backup = dc_ ? copies_[worker] + local : nullptr;
    float* state = state_.empty() ? nullptr : state_.data() + local;
    // Nothing sent yet: the backup is the parameters themselves (no delay).
    if (dc_ && !cover_.holds(worker, local)) std::memcpy(backup, params_.data() + local, n * sizeof(float));
    if (bf16)
      apply_update_bf16(p, step, params_.data() + local, static_cast<const uint16_t*>(g), backup, state, n,
                        scratch_.data());
    else
      apply_update(p, step, params_.data() + local, static_cast<const float*>(g), backup, state, n);
  }

  void snapshot(uint32_t worker, size_t local, size_t n) override {
    float* copy = copies_[worker];
    if (dc_)
      cover_.sent(worker, local, n, [&](size_t begin, size_t floats) {
        std::memcpy(copy + begin, params_.data() + begin, floats * sizeof(float));
      });
    std::memcpy(copy + local, params_.data() + local, n * sizeof(float));
  }

  std::optional<DirectSource> direct_source() const override { return DirectSource{region_.get(), params_.data()}; }

  bool has_state() const override { return !state_.empty(); }

  void save(size_t local, size_t n, float* params, float* state) override {
    std::memcpy(params, params_.data() + local, n * sizeof(float));
    if (state && !state_.empty()) std::memcpy(state, state_.data() + local, n * sizeof(float));
  }

  void load(size_t local, size_t n, const float* params, const float* state) override {
    std::memcpy(params_.data() + local, params, n * sizeof(float));
    if (state && !state_.empty()) std::memcpy(state_.data() + local, state, n * sizeof(float));
  }

 private:
  std::unique_ptr<transport::Region> region_;  // the parameters, registered
  std::span<float> params_;
  bool dc_;
  std::vector<float> state_;
  std::vector<float*> copies_;  // registered write-back sources, one per worker: DC backups too
  BackupCover cover_;
  std::vector<float> scratch_;  // a block of a bf16 piece widened (apply_update_bf16)
};

}  // namespace

std::unique_ptr<ShardStore> make_host_store(transport::Context& context, size_t floats, size_t shard_floats,
                                            uint32_t workers, UpdateRule rule) {
  return std::make_unique<HostShardStore>(context, floats, shard_floats, workers, rule);
}

}  // namespace rdmaps::ps
