#include "src/ps/closing_endpoints.h"

#include <algorithm>

namespace rdmaps::ps {

void ClosingEndpoints::sweep() {
  const auto now = Clock::now();
  std::erase_if(closing_, [&](Closing& c) {
    if (!c.ep->peer_closed() && !c.ep->failed() && now - c.since <= std::chrono::seconds(5)) return false;
    c.ep->close_later(std::move(c.keep));
    return true;
  });
}

// Each worker learns that the server left from its bootstrap socket closing
// here. Its UCX acknowledges the close (over tcp: the server's last puts) only
// when the worker drives it, which a worker with nothing to send does not: one
// in the server's own process, waiting for serve() to return, never could, and
// each stop waited out the 2 s deadline this once had. Nothing the server
// sent matters to a worker once it left, so the closes get what progress UCX
// can make now and the rest is left to UCX (the requests are released: its
// worker may be destroyed under them).
void ClosingEndpoints::close_all(transport::Context& context) {
  for (auto& c : closing_) c.ep->close_later(std::move(c.keep));
  closing_.clear();
  context.finish_closes(Clock::now());
}

}  // namespace rdmaps::ps
