// The floats of one shard that a worker's pieces covered in its current step
// (docs/protocol.md "Versions and staleness"): a piece over none of them is
// more of the same step, one over any of them starts a new step.
#pragma once

#include <array>
#include <cstdint>

namespace rdmaps::ps {

class StepCover {
 public:
  /// Disjoint runs kept; past that the two nearest merge, so a later piece in
  /// the gap between them starts a new step: the version may count a step too
  /// many for it, never too few.
  static constexpr uint32_t kRuns = 4;

  /// The worker's step these floats belong to; 0: none.
  uint64_t step() const { return step_; }
  /// Whether any float of [begin, end) is covered.
  bool covers_any(uint32_t begin, uint32_t end) const;
  /// Whether a piece [begin, end) of the worker's step `step` is more of the
  /// step these floats belong to (the shard's version counted it already)
  /// rather than a step of its own.
  bool continued_by(uint64_t step, uint32_t begin, uint32_t end) const {
    return step_ == step && !covers_any(begin, end);
  }
  /// A new step, its first piece [begin, end).
  void start(uint64_t step, uint32_t begin, uint32_t end);
  /// One more piece [begin, end) of the same step.
  void add(uint32_t begin, uint32_t end);
  /// Runs held (for tests).
  uint32_t runs() const { return n_; }

 private:
  struct Run {
    uint32_t begin = 0, end = 0;
  };
  uint64_t step_ = 0;
  uint32_t n_ = 0;
  std::array<Run, kRuns> runs_{};  // sorted, disjoint and not touching
};

}  // namespace rdmaps::ps
