#include "transport/request.h"

#include "transport/endpoint.h"
#include "transport/idle_backoff.h"

namespace rdmaps::transport {

Request& Request::operator=(Request&& other) noexcept {
  if (this != &other) {
    reset();
    engine_ = other.engine_;
    handle_ = other.handle_;
    op_ = other.op_;
    peer_ = other.peer_;
    other.handle_ = nullptr;
  }
  return *this;
}

void Request::reset() noexcept {
  if (handle_) engine_->release(handle_);
  handle_ = nullptr;
}

bool Request::test() {
  if (!handle_) return true;
  Errc code{};
  std::string reason;
  switch (engine_->test(handle_, &code, &reason)) {
    case RequestEngine::State::kPending:
      return false;
    case RequestEngine::State::kDone:
      reset();
      return true;
    case RequestEngine::State::kFailed:
      break;
  }
  reset();
  fail(code, reason);
}

void Request::wait() {
  IdleBackoff idle;
  while (!test()) idle.pause(engine_->progress() != 0);
}

void Request::wait_for(std::chrono::milliseconds timeout) {
  wait_until(std::chrono::steady_clock::now() + timeout, timeout, nullptr);
}

void Request::wait_until(std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds bound,
                         const std::atomic<bool>* cancel) {
  auto who = [&] { return peer_ ? " with peer " + peer_->peer_name() : std::string(); };
  IdleBackoff idle;
  while (!test()) {
    idle.pause(engine_->progress() != 0);
    const auto due = idle.checks_due();
    // A dead peer cannot complete this: its bootstrap socket says so at once,
    // on every transport, long before the timeout.
    if (due.peers && peer_ && peer_->peer_closed())
      throw Error(Errc::kPeerGone, std::string(op_) + who() +
                                       " cannot complete: the peer closed its connection (its process exited or "
                                       "failed) while this waited");
    if (due.deadline && cancel && cancel->load(std::memory_order_relaxed))
      throw Error(Errc::kCancelled, std::string(op_) + who() + " was still in flight when the wait was cancelled");
    if (due.deadline && std::chrono::steady_clock::now() > deadline)
      throw Error(Errc::kTimeout, std::string(op_) + who() + " not complete after " + std::to_string(bound.count()) +
                                      " ms (is the peer still progressing?)");
  }
}

void Request::fail(Errc code, const std::string& reason) {
  std::string who = peer_ ? " with peer " + peer_->peer_name() : "";
  std::string hint = code == Errc::kPeerGone ? ": the peer process died or closed its endpoint" : "";
  // How UCX fails an operation on a peer that died varies (over shared
  // memory: "Shared memory error", its segment gone with it): a peer whose
  // connection closed is gone, whatever the status said.
  if (code != Errc::kPeerGone && peer_ && peer_->peer_closed()) {
    code = Errc::kPeerGone;
    hint = ": the peer closed its connection (its process exited or failed)";
  }
  throw Error(code, std::string(op_) + who + " failed: " + reason + hint);
}

}  // namespace rdmaps::transport
