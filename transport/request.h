// A posted one-sided operation. Completion frees the local buffer only;
// remote visibility is ordered by fence() or guaranteed by flush().
#pragma once

#include <atomic>
#include <chrono>
#include <string>

#include "rdmaps/error.h"

namespace rdmaps::transport {

class Endpoint;

/// What a backend must answer about its in-flight requests.
class RequestEngine {
 public:
  enum class State { kPending, kDone, kFailed };
  /// On kFailed, fills code and reason (the backend's words).
  virtual State test(void* handle, Errc* code, std::string* reason) = 0;
  virtual void release(void* handle) noexcept = 0;
  virtual unsigned progress() = 0;

 protected:
  ~RequestEngine() = default;
};

/// Move-only handle; a default-constructed Request is already complete.
/// Destroying a pending Request releases it: the operation still completes
/// (its buffers must stay valid until then), but nobody learns how, so wait()
/// on anything whose outcome matters.
class [[nodiscard]] Request {
 public:
  Request() = default;
  Request(RequestEngine* engine, void* handle, const char* op, const Endpoint* peer) noexcept
      : engine_(engine), handle_(handle), op_(op), peer_(peer) {}
  Request(Request&& other) noexcept { *this = std::move(other); }
  Request& operator=(Request&& other) noexcept;
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;
  ~Request() { reset(); }

  /// True once complete; throws Error (naming the operation and peer) if it failed.
  bool test();
  /// Drives progress until complete; throws Error if it failed.
  void wait();
  /// As wait(), but throws Error(kTimeout) naming the operation and peer when
  /// it is not complete in time (a peer that stopped progressing, say). After
  /// a timeout treat the endpoint as failed and close it; the operation stays
  /// queued in UCX, so its buffers must outlive the endpoint.
  void wait_for(std::chrono::milliseconds timeout);
  /// As wait_for(), for one of several waits that share a deadline: the
  /// timeout names `bound` (the whole wait's), and `*cancel` turning true
  /// ends it with Error(kCancelled) (an interrupt from another thread).
  void wait_until(std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds bound,
                  const std::atomic<bool>* cancel);
  bool pending() const noexcept { return handle_ != nullptr; }
  /// The endpoint it was posted on (null for a context-wide one).
  const Endpoint* peer() const noexcept { return peer_; }
  /// The backend's handle, now the caller's (Context::retire takes it over);
  /// null when already complete.
  void* detach() noexcept {
    void* handle = handle_;
    handle_ = nullptr;
    return handle;
  }

 private:
  void reset() noexcept;
  [[noreturn]] void fail(Errc code, const std::string& reason);

  RequestEngine* engine_ = nullptr;
  void* handle_ = nullptr;
  const char* op_ = "";
  const Endpoint* peer_ = nullptr;
};

}  // namespace rdmaps::transport
