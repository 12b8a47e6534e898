#include "src/ps/step_cover.h"

#include <algorithm>

namespace rdmaps::ps {

bool StepCover::covers_any(uint32_t begin, uint32_t end) const {
  for (uint32_t i = 0; i < n_; ++i)
    if (begin < runs_[i].end && runs_[i].begin < end) return true;
  return false;
}

void StepCover::start(uint64_t step, uint32_t begin, uint32_t end) {
  step_ = step;
  n_ = 1;
  runs_[0] = {begin, end};
}

void StepCover::add(uint32_t begin, uint32_t end) {
  // Runs it touches merge into it; the rest keep their order around it.
  Run merged{begin, end};
  std::array<Run, kRuns + 1> out{};
  uint32_t n = 0;
  bool placed = false;
  for (uint32_t i = 0; i < n_; ++i) {
    const Run r = runs_[i];
    if (r.end < merged.begin) {
      out[n++] = r;
    } else if (merged.end < r.begin) {
      if (!placed) out[n++] = merged, placed = true;
      out[n++] = r;
    } else {
      merged = {std::min(merged.begin, r.begin), std::max(merged.end, r.end)};
    }
  }
  if (!placed) out[n++] = merged;
  if (n > kRuns) {  // the two nearest runs become one
    uint32_t at = 0;
    for (uint32_t i = 1; i + 1 < n; ++i)
      if (out[i + 1].begin - out[i].end < out[at + 1].begin - out[at].end) at = i;
    out[at].end = out[at + 1].end;
    std::copy(out.begin() + at + 2, out.begin() + n, out.begin() + at + 1);
    --n;
  }
  std::copy(out.begin(), out.begin() + n, runs_.begin());
  n_ = n;
}

}  // namespace rdmaps::ps
