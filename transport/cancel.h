// Cancelling a blocking set-up wait from another thread: while a CancelScope
// lives on a thread, that thread's transport waits (TCP connect, the bootstrap
// handshake, control messages) wake every kCancelCheck and end with
// Error(kCancelled) once its flag is set, so that Client::interrupt() and
// Ctrl-C reach a connect() that waits on a silent server (it waited out its
// whole timeout).
#pragma once

#include <atomic>
#include <chrono>
#include <string>

namespace rdmaps::transport {

constexpr std::chrono::milliseconds kCancelCheck{50};

class CancelScope {
 public:
  explicit CancelScope(const std::atomic<bool>* flag);
  ~CancelScope();
  CancelScope(const CancelScope&) = delete;
  CancelScope& operator=(const CancelScope&) = delete;

 private:
  const std::atomic<bool>* previous_;
};

/// How long a wait of up to `timeout_ms` may block before looking again: all
/// of it, or kCancelCheck inside a CancelScope. Throws Error(kCancelled)
/// saying "`what` (`peer`): cancelled" once the scope's flag is set.
int cancellable_wait_ms(int timeout_ms, const char* what, const std::string& peer);

}  // namespace rdmaps::transport
