#include "src/ps/joining_workers.h"

#include "rdmaps/error.h"
#include "src/ps/protocol.h"

namespace rdmaps::ps {

void JoiningWorkers::hold(std::unique_ptr<transport::Endpoint> ep, uint32_t worker, uint64_t reconnect_ms,
                          ClosingEndpoints& closing) {
  for (Probe& p : probes_)
    if (p.worker == worker) {
      closing.add(std::move(p.ep));
      p = Probe{std::move(ep), worker, reconnect_ms, false};
      return;
    }
  probes_.push_back(Probe{std::move(ep), worker, reconnect_ms, false});
}

void JoiningWorkers::let_go(ClosingEndpoints& closing) {
  for (Probe& p : probes_) closing.add(std::move(p.ep));
  probes_.clear();
}

bool JoiningWorkers::read_notices(Probe& p) {
  try {
    while (auto message = p.ep->try_recv_control(kMaxHelloBytes)) {
      const Hello notice = decode_hello(*message, p.ep->peer_name());
      if (notice.probe != kProbeJoining || notice.worker != p.worker) return false;
      p.joining = true;
    }
    return true;
  } catch (const Error&) {
    return false;  // closed (a notice before the close was read first), or malformed
  }
}

bool JoiningWorkers::poll(ClosingEndpoints& closing, const std::function<void(uint32_t, uint64_t)>& gave_up) {
  if (probes_.empty()) return false;
  bool any = false;
  std::erase_if(probes_, [&](Probe& p) {
    const bool readable = read_notices(p);
    if (readable && !p.ep->peer_closed() && !p.ep->failed()) return false;
    // Closed after it joined every server too: the lanes it reached hold it (live, or counted already).
    if (p.joining) gave_up(p.worker, p.reconnect_ms);
    closing.add(std::move(p.ep));
    any = true;
    return true;
  });
  return any;
}

}  // namespace rdmaps::ps
