// Where a lane's range of the table lives and how an update is applied to it:
// parameters, optimizer state, and each worker's DC backup (the parameters
// that worker was last sent). The host store keeps them in memory and applies
// with the Eigen rules (update_rules.h); the GPU store (gpu_shard.h) keeps them
// on the device and applies with the fused kernel. The data path does not
// know which.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "src/ps/update_rules.h"
#include "transport/context.h"

namespace rdmaps::ps {

class ShardStore {
 public:
  virtual ~ShardStore() = default;

  /// Sets [local, local+n) to `values` (initial parameters).
  virtual void init(size_t local, const float* values, size_t n) = 0;
  /// A worker (re)joins. `copy` (the store's size in floats) is its registered
  /// write-back source, and arrives zeroed (fresh pages, faulted in off the
  /// lane: WorkerCopy); the worker's backup holds nothing it was sent, so its
  /// pushes to a shard before that shard's first snapshot() are applied
  /// uncompensated (BackupCover). Null
  /// where its write-backs need no copy (write_back_copies() false and a
  /// direct_source()): then snapshot() is never called for it. Throws when
  /// memory for the worker cannot be had (a GPU shard's DC backup): the lane
  /// refuses the worker, its slot as it was.
  virtual void attach(uint32_t worker, float* copy) = 0;
  /// w <- rule(w, g, backup, state) over [local, local+n); `g` is n floats, or
  /// n bfloat16 values when `bf16` (e.g. straight from an inbox slot).
  virtual void apply(const math::UpdateParams& p, math::Step step, uint32_t worker, size_t local, const void* g,
                     bool bf16, size_t n) = 0;
  /// Copies [local, local+n) of the parameters into the worker's copy, which
  /// is then also its backup: one copy serves both and cannot change in flight.
  virtual void snapshot(uint32_t worker, size_t local, size_t n) = 0;

  /// The parameters as registered host memory, which a write-back may be put
  /// from as they are where write_back_copies() says no copy is needed.
  struct DirectSource {
    const transport::Region* region;
    const float* params;  ///< local 0
  };
  /// Empty where a write-back must go through snapshot() (device memory).
  virtual std::optional<DirectSource> direct_source() const { return std::nullopt; }

  /// Whether the rule keeps optimizer state (momentum, mean square) here.
  virtual bool has_state() const = 0;
  /// Copies [local, local+n) of the parameters (and the state, when kept and
  /// `state` is given) out, for a checkpoint.
  virtual void save(size_t local, size_t n, float* params, float* state) = 0;
  /// Sets [local, local+n) from a checkpoint; `state` may be null (state starts at zero).
  virtual void load(size_t local, size_t n, const float* params, const float* state) = 0;
};

/// Whether a write-back goes through a copy of the parameters (snapshot()):
/// for a rule's DC backup, or over active messages, whose sends the lane
/// overlaps with further work. Otherwise it is put from direct_source(), where
/// the store has one, and waited for.
constexpr bool write_back_copies(UpdateRule rule, bool use_am) { return use_am || math::needs_backup(rule); }

/// In host memory: `floats` parameters, shards of up to `shard_floats`; the
/// parameters are registered with `context`, so that write-backs may be put
/// from them (direct_source()).
std::unique_ptr<ShardStore> make_host_store(transport::Context& context, size_t floats, size_t shard_floats,
                                            uint32_t workers, UpdateRule rule);

}  // namespace rdmaps::ps
