// UCX backend of transport::Context: one ucp_context + one ucp_worker.
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

#include "transport/context.h"
#include "transport/ucx/handles.h"
#include "transport/unique_fd.h"

namespace rdmaps::transport::ucx {

/// The UCX_TLS value a kind stands for (empty for kAuto).
const char* transport_tls(TransportKind kind);

class UcxEndpoint;

class UcxContext final : public Context, public RequestEngine {
 public:
  explicit UcxContext(const ContextOptions& options);
  ~UcxContext() override;

  std::unique_ptr<Listener> listen(const SockAddr& address) override;
  MemorySupport memory_support() const override;
  std::unique_ptr<Endpoint> connect(const SockAddr& address, std::chrono::milliseconds timeout,
                                    const std::string& name = {}, IfRefused if_refused = IfRefused::kFail) override;
  std::unique_ptr<Region> allocate(size_t size, Access access) override;
  std::unique_ptr<Region> register_memory(void* data, size_t size, Access access) override;
  void set_am_handler(uint16_t id, AmHandler handler) override;
  Request am_receive(AmMessage& message, Region& region, uint64_t offset) override;
  unsigned progress() override;
  bool wait_event(std::chrono::milliseconds timeout) override;
  void fence() override;
  Request flush() override;
  std::string describe() const override;

  // RequestEngine
  State test(void* handle, Errc* code, std::string* reason) override;
  void release(void* handle) noexcept override;
  void retire(std::vector<Request>& requests, std::shared_ptr<void> buffers) override;
  void drain(std::chrono::steady_clock::time_point deadline) override;
  void end_by(std::chrono::steady_clock::time_point deadline) override { end_by_ = deadline; }

  /// Blocks until `fd` is readable, a UCX event arrives, or the timeout passes.
  void wait_fd_or_event(int fd, int timeout_ms);
  /// Progresses until `done()` or the deadline; false on timeout. Set-up paths only.
  bool progress_until(const std::function<bool()>& done, std::chrono::steady_clock::time_point deadline);
  /// How often progress() checked the requests left in flight (its cadence's test).
  uint64_t orphan_sweeps() const { return orphan_sweeps_.load(std::memory_order_relaxed); }

  ucp_context_h ucp() const { return context_.get(); }
  ucp_worker_h worker() const { return worker_.get(); }
  const ContextOptions& options() const { return options_; }
  bool peer_failure_handling() const {
    using P = ContextOptions::PeerFailure;
    return options_.peer_failure == P::kOn;
  }
  /// This worker's packed address, sent to peers in the handshake.
  std::span<const uint8_t> worker_address() const { return worker_address_; }

  /// Takes an endpoint's close request: progressed with the worker, and waited
  /// for (2 s at most, all of them together) only when the context goes, so
  /// closing an endpoint never waits on its peer. Out of memory: the request is released.
  void adopt_close(void* request) noexcept;
  void keep_until_end(std::shared_ptr<void> memory) noexcept override;
  void finish_closes(std::chrono::steady_clock::time_point deadline) override;

  void track(ucp_ep_h ep, UcxEndpoint* endpoint);
  void untrack(ucp_ep_h ep);

 private:
  struct AmSlot {
    UcxContext* context;
    AmHandler handler;
  };
  static ucs_status_t on_am(void* arg, const void* header, size_t header_length, void* data, size_t length,
                            const ucp_am_recv_param_t* param);
  const UcxEndpoint* find(ucp_ep_h ep);
  void guard_am_ids();
  void bind_am_slot(uint16_t id, AmSlot* slot);
  void progress_loop();

  ContextOptions options_;
  ContextPtr context_;
  WorkerPtr worker_;
  std::vector<uint8_t> worker_address_;
  int event_fd_ = -1;  // UCX's
  UniqueFd epoll_;
  std::mutex endpoints_mu_;
  std::unordered_map<ucp_ep_h, UcxEndpoint*> endpoints_;
  std::deque<AmSlot> am_slots_;  // deque: UCX keeps pointers to the slots
  std::atomic<bool> warned_stray_am_{false};
  // Requests released while still in flight: UCX 1.13 asserts if a
  // rendezvous request is freed before its acknowledgement arrives, so they
  // are freed here once complete.
  std::mutex orphans_mu_;
  std::vector<void*> orphans_;
  // adopt_close(): each freed once complete, or when finish_closes() gives up on it.
  std::vector<void*> closes_;
  std::vector<std::shared_ptr<void>> lingering_;  // keep_until_end(): dropped after the last progress
  struct Retired {
    std::vector<void*> requests;    // freed as each completes
    std::shared_ptr<void> buffers;  // what they read: dropped with the last of them
  };
  std::vector<Retired> retired_;  // retire()
  std::atomic<bool> has_orphans_{false};
  std::atomic<uint32_t> progress_turns_{0};  // progress() checks them every kSweepEvery-th turn
  std::atomic<uint64_t> orphan_sweeps_{0};
  void sweep_orphans();
  /// Releases the closes still under way (UCX completes them).
  void give_up_closes() noexcept;
  void drop_retired();
  /// Receives an unconsumed rendezvous message into nothing.
  void discard(void* data_desc, size_t length) noexcept;
  std::atomic<bool> stop_{false};
  std::chrono::steady_clock::time_point end_by_ = std::chrono::steady_clock::time_point::max();
  std::thread progress_thread_;
};

}  // namespace rdmaps::transport::ucx
