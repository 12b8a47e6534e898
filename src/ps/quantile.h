// The q-quantile of a histogram of counts by value (staleness), for the
// server's ServerStats and rdmaps-train's summary of several servers'.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

namespace rdmaps::ps {

/// The value (index into `counts`) the q-quantile falls at; counts.size()
/// where it falls among `beyond`, values past the last index counted
/// together; 0 when nothing is counted.
inline size_t quantile_index(std::span<const uint64_t> counts, double q, uint64_t beyond = 0) {
  uint64_t total = beyond;
  for (uint64_t c : counts) total += c;
  if (total == 0) return 0;
  const auto target = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total)));
  uint64_t seen = 0;
  for (size_t i = 0; i < counts.size(); ++i)
    if ((seen += counts[i]) >= target) return i;
  return counts.size();
}

}  // namespace rdmaps::ps
