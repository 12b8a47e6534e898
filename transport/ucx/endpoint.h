// UCX backend of transport::Endpoint: a ucp_ep with peer error handling.
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <chrono>
#include <optional>

#include "transport/address.h"
#include "transport/control_seal.h"
#include "transport/endpoint.h"
#include "transport/tcp_socket.h"

namespace rdmaps::transport::ucx {

class UcxContext;
class UcxRemoteRegion;

class UcxEndpoint final : public Endpoint {
 public:
  using Deadline = std::chrono::steady_clock::time_point;
  /// The UCX endpoint to an authenticated peer's worker address; its
  /// bootstrap socket comes with adopt_socket().
  static std::unique_ptr<UcxEndpoint> create(UcxContext& context, std::string peer,
                                             std::span<const uint8_t> remote_worker);
  /// Connects, runs the client side of the bootstrap handshake, creates the endpoint.
  static std::unique_ptr<UcxEndpoint> connect(UcxContext& context, const SockAddr& address,
                                              std::chrono::milliseconds timeout, const std::string& name,
                                              IfRefused if_refused);
  /// `seal`: the handshake's, which every control message then carries.
  /// The socket is kept alive as ContextOptions::peer_silence says: it is how
  /// every transport learns of a dead peer, and one whose host vanished sends
  /// no FIN (a lane waiting on it waited for good).
  void adopt_socket(TcpSocket socket, std::optional<ControlSeal> seal);
  ~UcxEndpoint() override;

  const std::string& peer_name() const override { return peer_; }
  bool rma_native() const override { return rma_native_; }
  bool rma_to_registered() const override { return rma_to_registered_; }
  std::string describe() const override { return lanes_; }
  bool failed() const override { return error_.load(std::memory_order_acquire) != UCS_OK; }
  bool peer_closed() const override;

  std::unique_ptr<RemoteRegion> import(const RegionDescriptor& descriptor) override;
  Request put(const void* src, size_t length, const RemoteRegion& dst, uint64_t offset, const Region* local) override;
  Request get(void* dst, size_t length, const RemoteRegion& src, uint64_t offset, const Region* local) override;
  Request fetch_add(const RemoteRegion& dst, uint64_t offset, uint64_t value, uint64_t* old) override;
  Request compare_swap(const RemoteRegion& dst, uint64_t offset, uint64_t expected, uint64_t desired,
                       uint64_t* old) override;
  void fence() override;
  Request flush() override;
  Request am_send(uint16_t id, const void* header, size_t header_length, const void* payload, size_t length,
                  const Region* local) override;
  void send_control(std::span<const uint8_t> message, std::chrono::milliseconds timeout) override;
  std::vector<uint8_t> recv_control(std::chrono::milliseconds timeout) override;
  std::optional<std::vector<uint8_t>> try_recv_control(size_t max_bytes) override;
  void close_later(std::shared_ptr<void> keep = nullptr) noexcept override;

 private:
  UcxEndpoint(UcxContext& context, std::string peer);
  static void on_error(void* arg, ucp_ep_h ep, ucs_status_t status);
  void detect_lanes();
  /// Starts the close; returns its request if the peer must acknowledge it.
  /// The close begun; null when there is nothing to wait for (an unused
  /// endpoint's close goes to the context).
  void* begin_close() noexcept;
  const UcxRemoteRegion& checked(const RemoteRegion& region, uint64_t offset, size_t length, Access need,
                                 const char* op) const;
  void check_local(const void* ptr, size_t length, const Region* local, const char* op) const;
  Request wrap(ucs_status_ptr_t sp, const char* op);
  void check_open(const char* op) const;  // throws kPeerGone where closed or failed

  UcxContext& context_;
  TcpSocket socket_;
  MessageReader control_reader_;  // try_recv_control's partial message
  std::optional<ControlSeal> seal_;
  ucp_ep_h ep_ = nullptr;
  std::string peer_;
  std::atomic<ucs_status_t> error_{UCS_OK};
  mutable std::atomic<bool> peer_closed_{false};  // the bootstrap socket saw EOF
  bool rma_native_ = false;
  bool rma_to_registered_ = false;
  bool used_ = false;  // any operation posted: closing then flushes it
  bool peer_failure_handling_ = true;
  std::string lanes_;
};

}  // namespace rdmaps::transport::ucx
