#include "src/train/run_result.h"

#include "src/ps/quantile.h"

namespace rdmaps::train {

void add_histogram(std::istringstream& in, Histogram& into) {
  for (std::string item; in >> item;) {
    auto colon = item.find(':');
    if (colon == std::string::npos) continue;
    const bool at_least = item.rfind(">=", 0) == 0;
    const size_t tau = std::stoull(item.substr(at_least ? 2 : 0, colon));
    const uint64_t count = std::stoull(item.substr(colon + 1));
    if (at_least) {
      into.beyond += count;
      into.from = tau;
      continue;
    }
    if (into.exact.size() <= tau) into.exact.resize(tau + 1, 0);
    into.exact[tau] += count;
  }
}

std::string quantile_text(const Histogram& h, double q) {
  const size_t tau = ps::quantile_index(h.exact, q, h.beyond);
  return h.beyond && tau == h.exact.size() ? ">=" + std::to_string(h.from) : std::to_string(tau);
}

}  // namespace rdmaps::train
