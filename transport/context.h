// Entry point of the transport: one progress engine (UCX worker) that owns
// registrations, listeners and endpoints.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "transport/address.h"
#include "transport/endpoint.h"
#include "transport/region.h"
#include "transport/request.h"
#include "transport/tcp_socket.h"

namespace rdmaps::transport {

/// Which UCX transports to use. kAuto leaves UCX_TLS to the environment,
/// which on a cluster selects InfiniBand/RoCE.
enum class TransportKind { kAuto, kTcp, kShm };
const char* transport_name(TransportKind kind);
/// "auto", "tcp", "shm"; throws Error(kInvalidArgument) on anything else.
TransportKind parse_transport(std::string_view text);

/// What memory a backend moves, as the backend itself answers (NIXL's backends
/// answer getSupportedMems() the same way): src/ chooses the GPU data path
/// from this, never from the backend's name or version.
struct MemorySupport {
  std::string backend, version;           ///< "UCX", "1.13.1"
  std::vector<std::string> memory_types;  ///< "host", "cuda", "cuda-managed", ...
  bool device_memory = false;             ///< CUDA device pointers may be handed to it
  std::string device_note;                ///< one line: why they may, or why not
  std::string error;                      ///< the query failed
};

struct ContextOptions {
  TransportKind transport = TransportKind::kAuto;
  /// Run progress on a background thread (otherwise the caller drives it).
  bool progress_thread = false;
  /// Ask UCX for event-fd wake-up so idle waits can block instead of spin.
  bool wakeup = true;
  /// How long a wait keeps polling after the last UCX activity before it
  /// blocks on the event fd: blocking at every lull costs a wake-up per
  /// rendezvous step (measured: 15 % of tcp active-message bandwidth).
  std::chrono::microseconds spin_before_block{50};
  /// UCX peer-failure handling (requests to a dead peer fail instead of
  /// hanging). UCX 1.13 lacks it on shared memory, and asking for it makes UCX
  /// skip the transports and lanes without it: on tcp it drops the RMA lanes,
  /// so rendezvous cannot use put-zcopy (measured: 1 MiB active messages at
  /// ~0.6x of ucp_am_bw instead of ~0.9x). kAuto leaves it off; every
  /// transport learns of a dead peer from the bootstrap socket closing, and
  /// Request::wait_for bounds every wait that needs the peer.
  enum class PeerFailure { kAuto, kOn, kOff } peer_failure = PeerFailure::kAuto;
  std::string name = "rdmaps";
  /// Every peer is on this host (a listen or server address on loopback):
  /// UCX's own listeners, one per network device it uses, which take
  /// connections without rdmaps' handshake, stay on loopback too
  /// (UCX_NET_DEVICES=lo unless the environment sets it).
  bool loopback_only = false;
  /// Shared secret both sides of every connection must prove before anything
  /// else is exchanged (docs/security.md); empty: no authentication (--insecure).
  std::string secret{};
  /// A connecting peer's bootstrap handshake must complete within this, and at
  /// most `max_pending_handshakes` run at once per listener; more wait in the
  /// kernel's backlog.
  std::chrono::milliseconds handshake_timeout{5000};
  uint32_t max_pending_handshakes = 256;
  /// connect() warns, naming the peer, when a peer that took the TCP
  /// connection has not begun the handshake after this long (a worker of
  /// rdmaps-train waited its 120 s in silence before one that never would),
  /// and waits for its whole timeout all the same: a server answers once it
  /// runs (after resuming a checkpoint) and between admissions of workers.
  std::chrono::milliseconds connect_quiet_warning{10000};
  /// Over tcp, a connection silent this long (its peer's host gone, or the
  /// network between cut) is dead: UCX's TCP keepalives are set to that,
  /// unless UCX_TCP_KEEPIDLE/KEEPINTVL/KEEPCNT are set. 0: UCX's own (about
  /// 20 s in UCX 1.13, which ended jobs at a 20 s partition).
  std::chrono::milliseconds peer_silence{0};
};

/// An arriving active message, valid only inside the handler.
struct AmMessage {
  const Endpoint* from = nullptr;  ///< nullptr if the sender is unknown
  const void* header = nullptr;
  size_t header_length = 0;
  size_t length = 0;        ///< payload bytes
  void* payload = nullptr;  ///< eager data, or UCX's descriptor for rendezvous data
  bool rendezvous = false;  ///< payload still at the sender until received
  bool consumed = false;
};
using AmHandler = std::function<void(AmMessage&)>;

class Listener {
 public:
  virtual ~Listener() = default;
  /// The bound address (the real port when asked for port 0).
  virtual const SockAddr& address() const = 0;
  /// Never waits: takes in connecting peers and advances their handshakes a
  /// step as their bytes arrive; returns a peer whose handshake completed, else
  /// nullptr. Throws Error naming a peer that failed or ran out of time (it is
  /// gone; the others go on), so a slow or hostile peer holds up nobody.
  virtual std::unique_ptr<Endpoint> poll() = 0;
  /// Waits for the next peer: poll() until one completes, its error, or
  /// Error(kTimeout) saying what it waited for.
  virtual std::unique_ptr<Endpoint> accept(std::chrono::milliseconds timeout) = 0;
};

class Context {
 public:
  virtual ~Context() = default;

  virtual std::unique_ptr<Listener> listen(const SockAddr& address) = 0;
  /// Connects and handshakes; throws Error(kUnreachable/kTimeout) with a hint.
  /// `name` is how errors name the peer (default: its address); `if_refused`
  /// whether a port nobody listens on yet is tried again within the timeout.
  virtual std::unique_ptr<Endpoint> connect(const SockAddr& address, std::chrono::milliseconds timeout,
                                            const std::string& name = {}, IfRefused if_refused = IfRefused::kFail) = 0;

  /// Memory allocated by the transport (shared-memory backed where it can be,
  /// so peers on the same host map it directly).
  virtual std::unique_ptr<Region> allocate(size_t size, Access access) = 0;
  /// Registers caller-owned memory; the caller keeps it alive longer.
  virtual std::unique_ptr<Region> register_memory(void* data, size_t size, Access access) = 0;

  /// Handles active messages with this id. The handler runs inside progress(),
  /// so it must not wait on a Request (UCX forbids re-entering progress):
  /// keep what am_receive() returns and complete it after the handler.
  virtual void set_am_handler(uint16_t id, AmHandler handler) = 0;
  /// Lands a message's payload at `offset` in `region` (bounds checked).
  virtual Request am_receive(AmMessage& message, Region& region, uint64_t offset) = 0;

  /// Returns how many events it handled.
  virtual unsigned progress() = 0;
  /// Blocks until an event arrives or `timeout` passes; true if woken by an event.
  virtual bool wait_event(std::chrono::milliseconds timeout) = 0;
  /// Drives the closes begun by Endpoint::close_later() until every peer
  /// acknowledged or `deadline` passed; those still open then are left to UCX.
  virtual void finish_closes(std::chrono::steady_clock::time_point deadline) = 0;
  /// Keeps `buffers` alive until every one of `requests` (taken, left empty)
  /// completed. A send given up on (its peer left, died or stopped) may still
  /// read its buffers after its Request went and its endpoint closed: UCX
  /// 1.13 reads an active message's header when the send leaves its queue and
  /// a rendezvous payload when the peer asks for it. When the context goes,
  /// those still in flight after a second's grace lose theirs: UCX 1.13 lets
  /// no registered memory outlive its context (a peer stopped mid-send then
  /// gets an error, or nothing).
  virtual void retire(std::vector<Request>& requests, std::shared_ptr<void> buffers) = 0;
  /// Keeps `memory` (registered regions a peer may still put into) until the
  /// context's last progress. Where puts are emulated (tcp) a put arrives as
  /// a message that progress writes to the address it names, registration
  /// unchecked, for as long as the peer's endpoint lives, whatever this side
  /// closed: UCX 1.13 keeps the endpoint a peer connected until the worker is
  /// destroyed, "to enable remote endpoints keep sending" (ucp_ep.c). Memory
  /// freed earlier takes such a put unmapped. Its owner may give its pages
  /// back meanwhile (nothing reads it); the mapping stays.
  virtual void keep_until_end(std::shared_ptr<void> memory) noexcept = 0;
  /// Drives released and retired requests (not closes) until every one
  /// ended or `deadline` passed: an owner calls it before the buffers it did not
  /// retire go (the context's own end gives them the same grace, too late
  /// for members destroyed before it).
  virtual void drain(std::chrono::steady_clock::time_point deadline) = 0;
  /// The context's end gives closes and sends in flight a grace (2 s, then
  /// 1 s) no later than `deadline`: an owner whose own end is bounded (a
  /// client's leave) stays within its bound.
  virtual void end_by(std::chrono::steady_clock::time_point deadline) = 0;
  /// Worker-wide fence and flush (every endpoint of this context).
  virtual void fence() = 0;
  virtual Request flush() = 0;

  /// UCX version and configuration, one line per item.
  virtual std::string describe() const = 0;
  /// What memory this context, configured as it is, moves.
  virtual MemorySupport memory_support() const = 0;
};

std::unique_ptr<Context> create_context(const ContextOptions& options);
/// memory_support() of a context made with `options`, without making one
/// (reports before any connection: rdmaps-info, benchmarks' banners).
MemorySupport probe_memory_support(const ContextOptions& options = {});

}  // namespace rdmaps::transport
