#include "transport/tcp_socket.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <thread>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "transport/cancel.h"

namespace rdmaps::transport {

namespace {
std::string sys_error(int err) { return std::strerror(err); }

// Rounded up: 0 only once the deadline passed. Rounded down, the last poll
// of a wait took 0 ms up to a millisecond before it, and the wait's timeout
// was seen before its deadline (a rendezvous took that for rank 0 stopping).
int remaining_ms(TcpSocket::Deadline deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  // poll() takes an int: a deadline 25 days off wrapped to a short or endless wait.
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, INT_MAX));
}

Error unreachable(const std::string& peer, int err) {
  return Error(Errc::kUnreachable,
               "connecting to " + peer + ": " + sys_error(err) +
                   (err == ECONNREFUSED ? " (nobody listens there: is the server running, on that port?)"
                                        : " (check the address and the network)"));
}

int open_socket(int family) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw Error(Errc::kIo, "socket(): " + sys_error(errno));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}
}  // namespace

TcpSocket& TcpSocket::operator=(TcpSocket&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

TcpSocket::~TcpSocket() {
  if (fd_ >= 0) ::close(fd_);
}

TcpSocket TcpSocket::listen(const SockAddr& address, const std::string& in_use_hint) {
  TcpSocket s(open_socket(address.get()->sa_family));
  int one = 1;
  setsockopt(s.fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(s.fd_, address.get(), address.length()) != 0)
    throw Error(errno == EADDRINUSE ? Errc::kInvalidArgument : Errc::kIo,
                "cannot listen on " + address.to_string() + ": " + sys_error(errno) +
                    (errno == EADDRINUSE ? " (" + in_use_hint + ")" : ""));
  if (::listen(s.fd_, 128) != 0) throw Error(Errc::kIo, "listen on " + address.to_string() + ": " + sys_error(errno));
  return s;
}

namespace {
// One attempt within the deadline: the connected socket, or an empty one
// where nobody listens (ECONNREFUSED).
TcpSocket attempt(const SockAddr& address, TcpSocket::Deadline deadline, const std::string& peer) {
  TcpSocket s(open_socket(address.get()->sa_family));
  if (::connect(s.fd(), address.get(), address.length()) != 0 && errno != EINPROGRESS) {
    if (errno == ECONNREFUSED) return TcpSocket();
    throw unreachable(peer, errno);
  }
  pollfd p{s.fd(), POLLOUT, 0};
  int n;
  for (;;) {
    const int left = remaining_ms(deadline);
    n = ::poll(&p, 1, cancellable_wait_ms(left, "connecting", peer));
    if (n < 0 && errno == EINTR) continue;  // a signal (Python's handler, a profiler's) is not the peer's answer
    if (n != 0 || left == 0) break;
  }
  if (n == 0)
    throw Error(Errc::kTimeout, "connecting to " + peer + ": no answer in time (is the host up and the port open?)");
  if (n < 0) throw unreachable(peer, errno);
  int err = 0;
  socklen_t len = sizeof(err);
  getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err == ECONNREFUSED) return TcpSocket();
  if (err != 0) throw unreachable(peer, err);
  // Tried again and again at a free local port, a socket may connect to
  // itself (TCP's simultaneous open): nobody listens there either.
  if (s.local_address().to_string() == peer) return TcpSocket();
  return s;
}
}  // namespace

TcpSocket TcpSocket::connect(const SockAddr& address, Deadline deadline, IfRefused if_refused) {
  using std::chrono::steady_clock;
  const std::string peer = address.to_string();
  const auto start = steady_clock::now();
  std::chrono::milliseconds pause{10};
  bool warned = false;
  for (;;) {
    TcpSocket s = attempt(address, deadline, peer);
    if (s.valid()) return s;
    if (if_refused == IfRefused::kFail) throw unreachable(peer, ECONNREFUSED);
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - start);
    const auto nobody = [&] {
      return Error(Errc::kUnreachable, "connecting to " + peer + ": nobody listened there within " +
                                           std::to_string(waited.count()) +
                                           " ms (is the server running, on that port?)");
    };
    if (steady_clock::now() >= deadline) throw nobody();
    if (!warned && waited >= std::chrono::seconds(3)) {
      warned = true;
      logf(LogLevel::kWarn, "rdmaps: connecting to %s: nobody listens there yet; trying again for up to %lld ms more",
           peer.c_str(), static_cast<long long>(remaining_ms(deadline)));
    }
    // Slept in cancellable steps: interrupt() and Ctrl-C end the wait.
    for (const auto until = std::min(deadline, steady_clock::now() + pause); steady_clock::now() < until;)
      std::this_thread::sleep_for(
          std::chrono::milliseconds(cancellable_wait_ms(remaining_ms(until), "connecting", peer)));
    // No attempt with no time left: a refusal from another host takes a
    // round trip, and that attempt would end as a timeout, not as this.
    waited = std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - start);
    if (steady_clock::now() >= deadline) throw nobody();
    pause = std::min(pause * 2, std::chrono::milliseconds(500));
  }
}

void TcpSocket::keep_alive(std::chrono::milliseconds silence) const {
  if (silence.count() <= 0 || fd_ < 0) return;
  const KeepaliveSchedule k = KeepaliveSchedule::of(silence);
  // The kernel counts in whole seconds.
  const auto seconds = [](std::chrono::milliseconds t) {
    return static_cast<int>(std::min<long long>((t.count() + 999) / 1000, 32767));
  };
  const int on = 1, idle = seconds(k.idle), interval = seconds(k.interval), count = k.count;
  if (setsockopt(fd_, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) != 0 ||
      setsockopt(fd_, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) != 0 ||
      setsockopt(fd_, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval)) != 0 ||
      setsockopt(fd_, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count)) != 0)
    throw Error(Errc::kIo,
                "setting keepalive on the connection from " + local_address().to_string() + ": " + sys_error(errno));
}

TcpSocket TcpSocket::try_accept(SockAddr* peer) const {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) {
    const int err = errno;  // building the message below may change errno
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED) return TcpSocket();
    throw Error(Errc::kIo, "accept on " + local_address().to_string() + ": " + sys_error(err) +
                               (err == EMFILE || err == ENFILE ? " (out of file descriptors: raise ulimit -n)" : ""));
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (peer) *peer = SockAddr::from(reinterpret_cast<sockaddr*>(&ss), len);
  return TcpSocket(fd);
}

void TcpSocket::wait_ready(short events, Deadline deadline, const char* what, const std::string& peer) const {
  pollfd p{fd_, events, 0};
  for (;;) {
    const int left = remaining_ms(deadline);
    int n = ::poll(&p, 1, cancellable_wait_ms(left, what, peer));
    if (n > 0) return;
    if (n == 0 && left > 0) continue;  // a look at the cancel flag
    if (n == 0) throw Error(Errc::kTimeout, std::string(what) + " (" + peer + "): timed out");
    if (errno != EINTR) throw Error(Errc::kIo, std::string(what) + " (" + peer + "): " + sys_error(errno));
  }
}

void TcpSocket::send_all(const void* data, size_t length, Deadline deadline, const std::string& peer) const {
  iovec part{const_cast<void*>(data), length};
  send_parts(std::span<iovec>(&part, 1), deadline, peer);
}

void TcpSocket::send_parts(std::span<iovec> parts, Deadline deadline, const std::string& peer) const {
  for (;;) {
    while (!parts.empty() && parts.front().iov_len == 0) parts = parts.subspan(1);
    if (parts.empty()) return;
    msghdr m{};
    m.msg_iov = parts.data();
    m.msg_iovlen = parts.size();
    ssize_t n = ::sendmsg(fd_, &m, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      wait_ready(POLLOUT, deadline, "sending to peer", peer);
      continue;
    }
    if (n <= 0)
      throw Error(Errc::kPeerGone,
                  "sending to " + peer + ": " + sys_error(errno) + " (the peer closed the connection)");
    for (auto sent = static_cast<size_t>(n); sent > 0;) {
      iovec& front = parts.front();
      const size_t step = std::min(sent, front.iov_len);
      front.iov_base = static_cast<char*>(front.iov_base) + step;
      front.iov_len -= step;
      sent -= step;
      if (front.iov_len == 0) parts = parts.subspan(1);
    }
  }
}

void TcpSocket::recv_all(void* data, size_t length, Deadline deadline, const std::string& peer) const {
  auto* p = static_cast<char*>(data);
  while (length > 0) {
    ssize_t n = ::recv(fd_, p, length, 0);
    if (n > 0) {
      p += n;
      length -= static_cast<size_t>(n);
    } else if (n == 0) {
      throw Error(Errc::kPeerGone, "peer " + peer + " closed the connection");
    } else if (errno == EAGAIN || errno == EINTR) {
      wait_ready(POLLIN, deadline, "waiting for a message from peer", peer);
    } else {
      throw Error(Errc::kPeerGone, "receiving from " + peer + ": " + sys_error(errno));
    }
  }
}

namespace {
void check_message_size(size_t bytes) {
  if (bytes > TcpSocket::kMaxMessage)
    throw Error(Errc::kInvalidArgument, "control message of " + std::to_string(bytes) + " bytes exceeds the " +
                                            std::to_string(TcpSocket::kMaxMessage) + "-byte limit");
}
}  // namespace

void TcpSocket::send_message(std::span<const uint8_t> message, Deadline deadline, const std::string& peer) const {
  check_message_size(message.size());
  // Prefix and body in one call, so one segment where the message fits one:
  // a peer that answers and closes at the first bytes it reads cannot reset
  // the connection between the two.
  uint32_t length = static_cast<uint32_t>(message.size());
  iovec parts[2] = {{&length, sizeof(length)}, {const_cast<uint8_t*>(message.data()), message.size()}};
  send_parts(parts, deadline, peer);  // an empty body is skipped there
}

namespace {
Error too_long(const std::string& peer, uint32_t length, size_t max_bytes) {
  // A length that reads as text ("HTTP", "SSH-") is another protocol's greeting: say so.
  char text[sizeof(length)];
  std::memcpy(text, &length, sizeof(length));
  const bool printable = std::all_of(std::begin(text), std::end(text), [](char c) { return c >= 0x20 && c < 0x7f; });
  return Error(
      Errc::kProtocol,
      "control message from " + peer + " claims " + std::to_string(length) + " bytes, over the " +
          std::to_string(max_bytes) + "-byte limit" +
          (printable ? " (its first bytes read '" + std::string(text, sizeof(text)) + "': not an rdmaps peer)" : ""));
}
}  // namespace

std::vector<uint8_t> TcpSocket::recv_message(Deadline deadline, const std::string& peer, size_t max_bytes) const {
  uint32_t length = 0;
  recv_all(&length, sizeof(length), deadline, peer);
  if (length > max_bytes) throw too_long(peer, length, max_bytes);
  std::vector<uint8_t> message(length);
  if (length) recv_all(message.data(), length, deadline, peer);
  return message;
}

bool MessageReader::poll(const TcpSocket& socket, const std::string& peer, size_t max_bytes) {
  // The body grows by what arrived, never by what the peer announced: a
  // 48-byte opening that announced 64 KiB pinned 64 KiB, per connection of
  // peers that need no secret to send it.
  uint8_t chunk[16 * 1024];
  for (;;) {
    uint8_t* dst;
    size_t want;
    if (head_have_ < sizeof(head_)) {
      dst = head_ + head_have_;
      want = sizeof(head_) - head_have_;
    } else {
      if (body_.size() == body_want_) return true;
      dst = chunk;
      want = std::min<size_t>(body_want_ - body_.size(), sizeof(chunk));
    }
    ssize_t n = ::recv(socket.fd(), dst, want, MSG_DONTWAIT);
    if (n > 0 && dst == chunk) body_.insert(body_.end(), chunk, chunk + n);
    if (n == 0) throw Error(Errc::kPeerGone, "peer " + peer + " closed the connection");
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return false;
      throw Error(Errc::kPeerGone, "receiving from " + peer + ": " + sys_error(errno));
    }
    if (head_have_ < sizeof(head_)) {
      head_have_ += static_cast<size_t>(n);
      if (head_have_ < sizeof(head_)) continue;
      uint32_t length;
      std::memcpy(&length, head_, sizeof(length));
      if (length > max_bytes) throw too_long(peer, length, max_bytes);
      body_want_ = length;
    }
  }
}

std::vector<uint8_t> MessageReader::take() {
  std::vector<uint8_t> out = std::move(body_);
  *this = MessageReader();
  return out;
}

void MessageWriter::queue(std::span<const uint8_t> message) {
  check_message_size(message.size());
  if (empty()) {
    bytes_.clear();
    sent_ = 0;
  }
  const auto length = static_cast<uint32_t>(message.size());
  const auto* head = reinterpret_cast<const uint8_t*>(&length);
  bytes_.insert(bytes_.end(), head, head + sizeof(length));
  bytes_.insert(bytes_.end(), message.begin(), message.end());
}

bool MessageWriter::flush(const TcpSocket& socket, const std::string& peer) {
  while (!empty()) {
    const ssize_t n = ::send(socket.fd(), bytes_.data() + sent_, bytes_.size() - sent_, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return false;
    if (n <= 0)
      throw Error(Errc::kPeerGone,
                  "sending to " + peer + ": " + sys_error(errno) + " (the peer closed the connection)");
    sent_ += static_cast<size_t>(n);
  }
  return true;
}

bool TcpSocket::readable(int timeout_ms) const {
  pollfd p{fd_, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) > 0;
}

SockAddr TcpSocket::local_address() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return SockAddr();
  return SockAddr::from(reinterpret_cast<sockaddr*>(&ss), len);
}

}  // namespace rdmaps::transport
