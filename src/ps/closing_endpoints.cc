#include "src/ps/closing_endpoints.h"

#include <algorithm>

namespace rdmaps::ps {

void ClosingEndpoints::sweep() {
  const auto now = Clock::now();
  std::erase_if(closing_, [&](Closing& c) {
    if (!c.ep->peer_closed() && !c.ep->failed() && now - c.since <= std::chrono::seconds(5)) return false;
    c.ep->close_later();
    return true;
  });
}

void ClosingEndpoints::close_all(transport::Context& context, Clock::time_point deadline) {
  for (auto& c : closing_) c.ep->close_later();
  closing_.clear();
  context.finish_closes(deadline);
}

}  // namespace rdmaps::ps
