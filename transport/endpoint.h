// A connection to one peer: one-sided operations, active messages, and a
// small ordered control channel for set-up (descriptors, handshakes).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "transport/region.h"
#include "transport/request.h"

namespace rdmaps::transport {

class Endpoint {
 public:
  virtual ~Endpoint() = default;
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  /// Who is at the other end, for messages ("127.0.0.1:41000 (worker-2)").
  virtual const std::string& peer_name() const = 0;
  /// Whether puts/gets run on a transport that does them natively (shared
  /// memory, verbs) rather than emulated in software over messages (tcp).
  virtual bool rma_native() const = 0;
  /// Whether puts into memory the peer registered itself (rather than memory
  /// the transport allocated) run natively: verbs do; UCX 1.13 emulates them
  /// over shared-memory mappings and CMA, and over tcp.
  virtual bool rma_to_registered() const = 0;
  /// Transports each lane uses, as UCX reports them ("rma: posix/memory ...").
  virtual std::string describe() const = 0;
  virtual bool failed() const = 0;
  /// Non-blocking: whether the peer closed the connection (process exited or
  /// endpoint destroyed), as the bootstrap socket reports on every transport.
  virtual bool peer_closed() const = 0;

  /// Binds a peer's descriptor to this endpoint (unpacks its key).
  virtual std::unique_ptr<RemoteRegion> import(const RegionDescriptor& descriptor) = 0;

  // One-sided operations. Out-of-bounds or wrong-rights requests throw before
  // anything is sent. `local` (optional) is the registration src/dst lies in.
  virtual Request put(const void* src, size_t length, const RemoteRegion& dst, uint64_t offset,
                      const Region* local = nullptr) = 0;
  virtual Request get(void* dst, size_t length, const RemoteRegion& src, uint64_t offset,
                      const Region* local = nullptr) = 0;
  /// 64-bit remote atomics; `offset` must be 8-byte aligned. *old receives the prior value.
  virtual Request fetch_add(const RemoteRegion& dst, uint64_t offset, uint64_t value, uint64_t* old) = 0;
  virtual Request compare_swap(const RemoteRegion& dst, uint64_t offset, uint64_t expected, uint64_t desired,
                               uint64_t* old) = 0;

  /// Orders every operation posted before it ahead of every one posted after
  /// it (UCX 1.13 fences the whole worker: all of this context's endpoints).
  virtual void fence() = 0;
  /// Completes when every operation posted before it is visible at the peer.
  virtual Request flush() = 0;

  /// Active message `id`: header (small) plus payload that the receiver may
  /// land directly in a registered region. Both are read until the Request
  /// completes (UCX 1.13 copies neither).
  virtual Request am_send(uint16_t id, const void* header, size_t header_length, const void* payload, size_t length,
                          const Region* local = nullptr) = 0;

  /// Control channel: reliable, ordered, length-delimited; for set-up only.
  virtual void send_control(std::span<const uint8_t> message, std::chrono::milliseconds timeout) = 0;
  virtual std::vector<uint8_t> recv_control(std::chrono::milliseconds timeout) = 0;
  /// Never waits: the next control message once all of it arrived, else
  /// nullopt. Error(kProtocol) when it announces more than `max_bytes`,
  /// Error(kPeerGone) when the peer closed.
  virtual std::optional<std::vector<uint8_t>> try_recv_control(size_t max_bytes) = 0;

  /// Starts closing without waiting; the context drives the peer's
  /// acknowledgement (Context::finish_closes), so leaving many peers costs one
  /// wait, not one each. A peer that closed its side or failed is never waited
  /// for. Destroying an open endpoint closes it and waits for that peer alone
  /// (2 s at most). Anything posted afterwards throws kPeerGone. `keep`:
  /// memory the peer may still put into, kept as Context::keep_until_end says
  /// where puts are emulated (!rma_native()), else released now.
  virtual void close_later(std::shared_ptr<void> keep = nullptr) noexcept = 0;

 protected:
  Endpoint() = default;
};

}  // namespace rdmaps::transport
