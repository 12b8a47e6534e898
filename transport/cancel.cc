#include "transport/cancel.h"

#include <algorithm>

#include "rdmaps/error.h"

namespace rdmaps::transport {
namespace {
thread_local const std::atomic<bool>* t_cancel = nullptr;
}

CancelScope::CancelScope(const std::atomic<bool>* flag) : previous_(t_cancel) { t_cancel = flag; }

CancelScope::~CancelScope() { t_cancel = previous_; }

int cancellable_wait_ms(int timeout_ms, const char* what, const std::string& peer) {
  if (!t_cancel) return timeout_ms;
  if (t_cancel->load(std::memory_order_relaxed))
    throw Error(Errc::kCancelled, std::string(what) + " (" + peer + "): cancelled (interrupted)");
  return std::min(timeout_ms, static_cast<int>(kCancelCheck.count()));
}

}  // namespace rdmaps::transport
