#include "transport/ucx/endpoint.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <thread>

#include "rdmaps/log.h"
#include "transport/bootstrap.h"
#include "transport/cancel.h"
#include "transport/ucx/context.h"
#include "transport/ucx/region.h"
#include "transport/ucx/status.h"

namespace rdmaps::transport::ucx {

namespace {
constexpr auto kCloseTimeout = std::chrono::seconds(2);

std::string ms(std::chrono::milliseconds t) { return std::to_string(t.count()) + " ms"; }
}  // namespace

UcxEndpoint::UcxEndpoint(UcxContext& context, std::string peer) : context_(context), peer_(std::move(peer)) {}

std::unique_ptr<UcxEndpoint> UcxEndpoint::create(UcxContext& context, std::string peer,
                                                 std::span<const uint8_t> remote_worker) {
  std::unique_ptr<UcxEndpoint> ep(new UcxEndpoint(context, std::move(peer)));
  ucp_ep_params_t params{};
  params.field_mask =
      UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.address = reinterpret_cast<const ucp_address_t*>(remote_worker.data());
  ep->peer_failure_handling_ = context.peer_failure_handling();
  params.err_mode = ep->peer_failure_handling_ ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
  params.err_handler.cb = &UcxEndpoint::on_error;
  params.err_handler.arg = ep.get();
  ucs_status_t status = ucp_ep_create(context.worker(), &params, &ep->ep_);
  if (status == UCS_ERR_UNREACHABLE && ep->peer_failure_handling_)
    throw Error(Errc::kUnreachable, "creating a UCX endpoint to " + ep->peer_ +
                                        ": no transport in UCX_TLS supports peer-failure handling (UCX 1.13 shared "
                                        "memory does not); turn peer-failure handling off or add tcp/verbs");
  check(status, "creating a UCX endpoint", "peer " + ep->peer_);
  context.track(ep->ep_, ep.get());
  ep->detect_lanes();
  return ep;
}

std::unique_ptr<UcxEndpoint> UcxEndpoint::connect(UcxContext& context, const SockAddr& address,
                                                  std::chrono::milliseconds timeout, const std::string& name,
                                                  IfRefused if_refused) {
  using std::chrono::steady_clock;
  const auto deadline = steady_clock::now() + timeout;
  const std::string peer = name.empty() ? address.to_string() : name;
  const auto quiet_for = context.options().connect_quiet_warning;
  std::chrono::milliseconds pause{100};
  for (bool warned = false;;) {
    TcpSocket socket = TcpSocket::connect(address, deadline, if_refused);
    const bootstrap::QuietPeer quiet{steady_clock::now() + quiet_for, [&] {
                                       logf(LogLevel::kWarn,
                                            "rdmaps: connecting to %s: it took the connection and has not answered "
                                            "for %s; waiting up to %s in all (a server answers once it runs, after "
                                            "resuming a checkpoint)",
                                            address.to_string().c_str(), ms(quiet_for).c_str(), ms(timeout).c_str());
                                     }};
    bootstrap::Established remote;
    try {
      remote = bootstrap::client_handshake(socket, context.worker_address(), context.options().secret, deadline, peer,
                                           quiet);
    } catch (const Error& e) {
      if (e.code() == Errc::kTimeout)
        throw Error(Errc::kTimeout, "connecting to " + address.to_string() + ": no handshake within " + ms(timeout) +
                                        " (it took the connection and never answered: is an rdmaps process "
                                        "listening there, and not stopped?)");
      // Closed without an answer: a listener full of pending handshakes drops
      // one (docs/security.md), a server stopping closes them. A connect that
      // waits for its server to listen tries again.
      if (if_refused != IfRefused::kRetry || e.code() != Errc::kPeerGone || steady_clock::now() + pause >= deadline)
        throw;
      if (!warned) {
        warned = true;
        logf(LogLevel::kWarn, "rdmaps: connecting to %s: %s during the handshake; trying again for up to %s more",
             address.to_string().c_str(), e.what(),
             ms(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady_clock::now())).c_str());
      }
      for (const auto until = steady_clock::now() + pause; steady_clock::now() < until;) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - steady_clock::now()).count();
        std::this_thread::sleep_for(std::chrono::milliseconds(
            cancellable_wait_ms(static_cast<int>(std::max<int64_t>(0, left)), "connecting", peer)));
      }
      pause = std::min(pause * 2, std::chrono::milliseconds(500));
      continue;
    }
    auto ep = create(context, peer, remote.address);
    ep->adopt_socket(std::move(socket), std::move(remote.seal));
    return ep;
  }
}

void UcxEndpoint::adopt_socket(TcpSocket socket, std::optional<ControlSeal> seal) {
  socket.keep_alive(context_.options().peer_silence);
  socket_ = std::move(socket);
  seal_ = std::move(seal);
}

void UcxEndpoint::on_error(void* arg, ucp_ep_h, ucs_status_t status) {
  auto* self = static_cast<UcxEndpoint*>(arg);
  self->error_.store(status, std::memory_order_release);
}

UcxEndpoint::~UcxEndpoint() {
  const bool gone = failed() || peer_closed_.load(std::memory_order_acquire);
  void* sp = begin_close();
  if (!sp) return;
  // A flush-close needs the peer to acknowledge; a dead or blocked peer
  // cannot, so wait a bounded time (briefly if its socket already closed)
  // and let UCX finish the rest.
  auto limit = gone ? std::chrono::milliseconds(50) : std::chrono::milliseconds(kCloseTimeout);
  bool done = context_.progress_until([&] { return ucp_request_check_status(sp) != UCS_INPROGRESS; },
                                      std::chrono::steady_clock::now() + limit);
  if (!done && !gone)
    logf(LogLevel::kWarn, "rdmaps: warning: closing the endpoint to %s: no acknowledgement within 2 s", peer_.c_str());
  ucp_request_free(sp);
}

void UcxEndpoint::close_later(std::shared_ptr<void> keep) noexcept {
  // A completed close ends no peer's emulated puts. Native ones land by the
  // peer's own mapping (shared memory) or a NIC that refuses an unregistered
  // region: there the memory may go now (kept, a server over shared memory
  // would hold a mapping per departure for good).
  if (!rma_native_) context_.keep_until_end(std::move(keep));
  const bool gone = failed() || peer_closed_.load(std::memory_order_acquire);
  void* sp = begin_close();
  if (!sp) return;
  // A peer that closed its side acknowledges only while it still drives UCX,
  // which a server whose run() returned no longer does (a worker leaving one
  // waited out its whole 5 s). Released at once, the close is waited for by
  // no one: UCX completes it, or ends it when the worker is destroyed (which
  // a released close request allows; an unreleased one asserts in UCX 1.13).
  if (gone)
    ucp_request_free(sp);
  else
    context_.adopt_close(sp);
}

void* UcxEndpoint::begin_close() noexcept {
  if (!ep_) return nullptr;
  context_.untrack(ep_);
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  // A peer known to be gone cannot acknowledge a flush-close; FORCE is legal
  // only with peer-failure handling on both sides.
  bool gone = failed() || peer_closed_.load(std::memory_order_acquire);
  params.flags = gone && peer_failure_handling_ ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  ucs_status_ptr_t sp = ucp_ep_close_nbx(ep_, &params);
  ep_ = nullptr;
  if (sp == nullptr || UCS_PTR_IS_ERR(sp)) return nullptr;
  if (!used_) {
    // Nothing was ever sent (a refused or silent peer): never wait on that
    // peer here; the context finishes the close.
    context_.adopt_close(sp);
    return nullptr;
  }
  return sp;
}

namespace {
// A lane's transport ("2:posix/memory.0 md[1] -> ...") that puts only into
// memory it mapped itself, or emulates puts.
bool maps_own_memory_only(const std::string& lane) {
  for (const char* t : {"posix/", "sysv/", "self/", "tcp/", "cma/"})
    if (lane.find(t) != std::string::npos) return true;
  return false;
}
}  // namespace

// UCX 1.13 has no query for an endpoint's transports; its printed
// configuration lists each lane with its transport and role.
void UcxEndpoint::detect_lanes() {
  char* text = nullptr;
  size_t size = 0;
  FILE* stream = open_memstream(&text, &size);
  if (!stream) return;
  ucp_ep_print_info(ep_, stream);
  std::fclose(stream);
  const std::unique_ptr<char, void (*)(void*)> owned(text, &std::free);  // freed if the copies below throw
  lanes_ = peer_failure_handling_ ? "" : "(UCX peer-failure handling off) ";
  std::string info(text, size);

  std::istringstream in(info);
  std::string line;
  bool any_rma = false, any_emulated = false, any_to_registered = false;
  while (std::getline(in, line)) {
    if (line.find("lane[") == std::string::npos) continue;
    auto colon = line.find(':');
    std::string body = colon == std::string::npos ? line : line.substr(colon + 1);
    while (!body.empty() && body.front() == ' ') body.erase(body.begin());
    // UCX pads its columns: "md[0]                -> md[0]" in a log line is one space.
    body.erase(std::unique(body.begin(), body.end(), [](char a, char b) { return a == ' ' && b == ' '; }), body.end());
    if (!lanes_.empty() && lanes_.back() != ' ') lanes_ += "; ";
    lanes_ += body;
    if (line.find("rma") != std::string::npos) {
      any_rma = true;
      if (line.find("tcp/") != std::string::npos) any_emulated = true;
    }
    // UCX 1.13 puts on "rma#" lanes only (rma_bw serves rendezvous), and a
    // shared-memory mapping reaches only memory its transport allocated.
    if (line.find(" rma#") != std::string::npos && !maps_own_memory_only(body)) any_to_registered = true;
  }
  rma_native_ = any_rma && !any_emulated;
  rma_to_registered_ = rma_native_ && any_to_registered;
}

bool UcxEndpoint::peer_closed() const {
  if (peer_closed_.load(std::memory_order_acquire)) return true;
  if (!socket_.readable(0)) return false;
  // Readable with nothing to read means EOF; a pending control message is not.
  char byte;
  ssize_t n = ::recv(socket_.fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
    peer_closed_.store(true, std::memory_order_release);
    return true;
  }
  return false;
}

void UcxEndpoint::send_control(std::span<const uint8_t> message, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  if (!seal_) return socket_.send_message(message, deadline, peer_);
  if (message.size() > TcpSocket::kMaxMessage - ControlSeal::kTagBytes)
    throw Error(Errc::kInvalidArgument, "a control message of " + std::to_string(message.size()) + " bytes to " +
                                            peer_ + " is over the limit with its seal");
  socket_.send_message(seal_->seal(message), deadline, peer_);
}

std::vector<uint8_t> UcxEndpoint::recv_control(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // Keep the worker progressing while waiting: over tcp the peer's puts are
  // emulated and complete only when this side progresses.
  auto last_activity = std::chrono::steady_clock::now();
  for (uint32_t busy = 0;; ++busy) {
    // While UCX has work, look at the socket only every 64 steps: a poll()
    // per progress call cost tcp active messages a visible share of bandwidth.
    if (context_.progress() != 0) {
      last_activity = std::chrono::steady_clock::now();
      if (busy % 64 != 0) continue;
    }
    if (socket_.readable(0)) break;
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) throw Error(Errc::kTimeout, "no control message from " + peer_ + " within " + ms(timeout));
    if (now - last_activity < context_.options().spin_before_block) continue;
    // Idle: sleep until the socket or UCX has something.
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    context_.wait_fd_or_event(socket_.fd(), cancellable_wait_ms(static_cast<int>(std::min<int64_t>(left + 1, 1000)),
                                                                "waiting for a control message", peer_));
    last_activity = std::chrono::steady_clock::now();
  }
  try {
    auto message = socket_.recv_message(deadline, peer_);
    return seal_ ? seal_->open(std::move(message), peer_) : message;
  } catch (const Error& e) {
    if (e.code() == Errc::kPeerGone) peer_closed_.store(true, std::memory_order_release);
    if (e.code() != Errc::kTimeout) throw;
    throw Error(Errc::kTimeout, "no control message from " + peer_ + " within " + ms(timeout));
  }
}

std::optional<std::vector<uint8_t>> UcxEndpoint::try_recv_control(size_t max_bytes) {
  try {
    if (!control_reader_.poll(socket_, peer_, max_bytes + (seal_ ? ControlSeal::kTagBytes : 0))) return std::nullopt;
  } catch (const Error& e) {
    if (e.code() == Errc::kPeerGone) peer_closed_.store(true, std::memory_order_release);
    throw;
  }
  return seal_ ? seal_->open(control_reader_.take(), peer_) : control_reader_.take();
}

std::unique_ptr<RemoteRegion> UcxEndpoint::import(const RegionDescriptor& descriptor) {
  check_open("import");
  check_packed_key(descriptor.packed_key, peer_);
  // UCX 1.13 crashes unpacking a shared-memory key of a process that exited
  // (its /proc/PID/fd link is gone, and the failed unpack releases a half-made
  // key): a server crashed when a worker was killed during its lane
  // handshake. A peer whose connection closed is refused first (its sockets
  // and that link go together at its exit).
  if (peer_closed())
    throw Error(Errc::kPeerGone, "import from " + peer_ + " refused: its connection closed (the process exited?)");
  ucp_rkey_h rkey = nullptr;
  check(ucp_ep_rkey_unpack(ep_, descriptor.packed_key.data(), &rkey), "unpacking a remote key", "peer " + peer_);
  return std::make_unique<UcxRemoteRegion>(this, descriptor, RkeyPtr(rkey));
}

void UcxEndpoint::check_open(const char* op) const {
  // Closed (close_later()): UCX's endpoint is gone, and a null one crashed UCX.
  if (!ep_) throw Error(Errc::kPeerGone, std::string(op) + " to " + peer_ + " refused: the endpoint is closed");
  if (failed())
    throw Error(Errc::kPeerGone,
                std::string(op) + " to " + peer_ + " refused: the endpoint failed (" + explain(error_.load()) + ")");
}

const UcxRemoteRegion& UcxEndpoint::checked(const RemoteRegion& region, uint64_t offset, size_t length, Access need,
                                            const char* op) const {
  const auto& remote = static_cast<const UcxRemoteRegion&>(region);
  if (remote.owner() != this)
    throw Error(Errc::kInvalidArgument,
                std::string(op) + " to " + peer_ + " refused: the remote region was imported on another endpoint");
  if (offset > region.size() || length > region.size() - offset)
    throw Error(Errc::kOutOfBounds, std::string(op) + " of " + std::to_string(length) + " bytes at offset " +
                                        std::to_string(offset) + " to " + peer_ + " refused: the remote region is " +
                                        std::to_string(region.size()) + " bytes");
  if (!allows(region.access(), need))
    throw Error(Errc::kPermissionDenied, std::string(op) + " to " + peer_ + " refused: the region was handed out " +
                                             access_name(region.access()) + ", " + op + " needs " + access_name(need));
  check_open(op);
  return remote;
}

void UcxEndpoint::check_local(const void* ptr, size_t length, const Region* local, const char* op) const {
  if (!local) return;
  auto p = reinterpret_cast<uintptr_t>(ptr);
  auto base = reinterpret_cast<uintptr_t>(local->data());
  if (p < base || p - base > local->size() || length > local->size() - (p - base))
    throw Error(Errc::kOutOfBounds, std::string(op) + " to " + peer_ + " refused: the local buffer of " +
                                        std::to_string(length) + " bytes is not inside the given " +
                                        std::to_string(local->size()) + "-byte registration");
}

Request UcxEndpoint::wrap(ucs_status_ptr_t sp, const char* op) {
  used_ = true;
  if (sp == nullptr) return Request();
  if (UCS_PTR_IS_ERR(sp)) throw error_from(UCS_PTR_STATUS(sp), op, "peer " + peer_);
  return Request(&context_, sp, op, this);
}

namespace {
ucp_request_param_t with_memh(const Region* local) {
  ucp_request_param_t params{};
  if (local) {
    params.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
    params.memh = static_cast<const UcxRegion*>(local)->memh();
  }
  return params;
}
}  // namespace

Request UcxEndpoint::put(const void* src, size_t length, const RemoteRegion& dst, uint64_t offset,
                         const Region* local) {
  const auto& remote = checked(dst, offset, length, Access::kRemoteWrite, "put");
  check_local(src, length, local, "put");
  ucp_request_param_t params = with_memh(local);
  return wrap(ucp_put_nbx(ep_, src, length, remote.base() + offset, remote.rkey(), &params), "put");
}

Request UcxEndpoint::get(void* dst, size_t length, const RemoteRegion& src, uint64_t offset, const Region* local) {
  const auto& remote = checked(src, offset, length, Access::kRemoteRead, "get");
  check_local(dst, length, local, "get");
  ucp_request_param_t params = with_memh(local);
  return wrap(ucp_get_nbx(ep_, dst, length, remote.base() + offset, remote.rkey(), &params), "get");
}

Request UcxEndpoint::fetch_add(const RemoteRegion& dst, uint64_t offset, uint64_t value, uint64_t* old) {
  if (offset % 8 != 0)
    throw Error(Errc::kInvalidArgument, "fetch-add at offset " + std::to_string(offset) + " to " + peer_ +
                                            " refused: 64-bit atomics need 8-byte alignment");
  const auto& remote = checked(dst, offset, 8, Access::kRemoteWrite, "fetch-add");
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_REPLY_BUFFER;
  params.datatype = ucp_dt_make_contig(8);
  params.reply_buffer = old;
  return wrap(ucp_atomic_op_nbx(ep_, UCP_ATOMIC_OP_ADD, &value, 1, remote.base() + offset, remote.rkey(), &params),
              "fetch-add");
}

Request UcxEndpoint::compare_swap(const RemoteRegion& dst, uint64_t offset, uint64_t expected, uint64_t desired,
                                  uint64_t* old) {
  if (offset % 8 != 0)
    throw Error(Errc::kInvalidArgument, "compare-swap at offset " + std::to_string(offset) + " to " + peer_ +
                                            " refused: 64-bit atomics need 8-byte alignment");
  const auto& remote = checked(dst, offset, 8, Access::kRemoteWrite, "compare-swap");
  // UCX's CSWAP compares the remote word with *buffer and swaps in the value
  // the reply buffer holds on entry; the reply buffer then receives the old word.
  *old = desired;
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_REPLY_BUFFER;
  params.datatype = ucp_dt_make_contig(8);
  params.reply_buffer = old;
  return wrap(ucp_atomic_op_nbx(ep_, UCP_ATOMIC_OP_CSWAP, &expected, 1, remote.base() + offset, remote.rkey(), &params),
              "compare-swap");
}

void UcxEndpoint::fence() {
  check_open("fence");
  // The peer's name made on failure only: a fence goes with every piece put.
  if (const ucs_status_t s = ucp_worker_fence(context_.worker()); s != UCS_OK)
    throw error_from(s, "fence", "peer " + peer_);
}

Request UcxEndpoint::flush() {
  check_open("flush");
  ucp_request_param_t params{};
  return wrap(ucp_ep_flush_nbx(ep_, &params), "flush");
}

Request UcxEndpoint::am_send(uint16_t id, const void* header, size_t header_length, const void* payload, size_t length,
                             const Region* local) {
  check_open("active message");
  check_local(payload, length, local, "active message");
  ucp_request_param_t params = with_memh(local);
  params.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
  params.flags = UCP_AM_SEND_FLAG_REPLY;  // lets the receiver know which endpoint sent it
  return wrap(ucp_am_send_nbx(ep_, id, header, header_length, payload, length, &params), "active message");
}

}  // namespace rdmaps::transport::ucx
