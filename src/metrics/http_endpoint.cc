#include "src/metrics/http_endpoint.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "src/metrics/http_reply.h"
#include "transport/address.h"

// One thread polls the listener and at most kMaxConnections connections, each
// with a deadline for its whole request head and one for its reply, and keeps
// no more than the head of a request: a body is never read, headers past
// kMaxRequestHead end the request. So no client, however slow, large or many,
// holds the endpoint's memory or other clients' scrapes beyond those
// deadlines. (cpp-httplib, used before, read chunked bodies and any number of
// header lines into memory, and two slow senders held both its threads.)
namespace rdmaps::metrics {

namespace {

using Clock = std::chrono::steady_clock;

// A scrape's request arrives whole in milliseconds.
constexpr auto kRequestTime = std::chrono::seconds(2);
// A page is kilobytes; a reader this slow is not a scraper.
constexpr auto kReplyTime = std::chrono::seconds(10);
// After the reply, what the client still sends (a body we did not read) is
// read and dropped for a moment, so that closing with unread bytes does not
// reset the connection before the client has read the reply.
constexpr auto kLingerTime = std::chrono::seconds(1);
constexpr size_t kLingerBytes = 1u << 20;
constexpr int kBacklog = 16;

struct Connection {
  enum class Phase { kRequest, kReply, kLinger, kDone };
  transport::TcpSocket socket;
  Phase phase = Phase::kRequest;
  std::string head;  // the request so far; never more than kMaxRequestHead + one read
  std::string reply;
  size_t sent = 0, dropped = 0;
  Clock::time_point deadline;
  uint64_t round = 0;  // the poll round that accepted it
};

int ms_until(Clock::time_point t) {
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(t - Clock::now()).count();
  return static_cast<int>(std::clamp<decltype(ms)>(ms, 0, 60'000));
}

bool would_block(ssize_t n) { return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR); }

// Sends what the socket takes now; true once the reply is out.
bool send_some(Connection& c) {
  while (c.sent < c.reply.size()) {
    const ssize_t n = ::send(c.socket.fd(), c.reply.data() + c.sent, c.reply.size() - c.sent, MSG_NOSIGNAL);
    if (would_block(n)) return false;
    if (n <= 0) {
      c.phase = Connection::Phase::kDone;
      return false;
    }
    c.sent += static_cast<size_t>(n);
  }
  return true;
}

// Moves one connection on by what poll() reported.
void step(Connection& c, short revents, const std::function<std::string()>& render) {
  if (Clock::now() >= c.deadline) {
    c.phase = Connection::Phase::kDone;  // a request, reply or linger past its time: nothing more is owed
    return;
  }
  char buffer[16384];
  if (c.phase == Connection::Phase::kRequest && revents) {
    const ssize_t n = ::recv(c.socket.fd(), buffer, sizeof(buffer), 0);
    if (would_block(n)) return;
    if (n <= 0) {
      c.phase = Connection::Phase::kDone;  // gone before its request was whole
      return;
    }
    const size_t searched = c.head.size() >= 3 ? c.head.size() - 3 : 0;
    c.head.append(buffer, static_cast<size_t>(n));
    size_t end = c.head.find("\r\n\r\n", searched);
    if (end == std::string::npos) end = c.head.find("\n\n", searched);
    if (end != std::string::npos && end <= kMaxRequestHead) {
      c.reply = reply_to(std::string_view(c.head).substr(0, end), render);
    } else if (c.head.size() > kMaxRequestHead) {
      c.reply = reply_to_oversized_head();
    } else {
      return;
    }
    c.head = std::string();
    c.phase = Connection::Phase::kReply;
    c.deadline = Clock::now() + kReplyTime;
    revents = POLLOUT;  // try at once: the socket's buffer usually takes it all
  }
  if (c.phase == Connection::Phase::kReply && revents) {
    if (!send_some(c)) return;
    ::shutdown(c.socket.fd(), SHUT_WR);
    c.phase = Connection::Phase::kLinger;
    c.deadline = Clock::now() + kLingerTime;
    return;
  }
  if (c.phase == Connection::Phase::kLinger && revents) {
    const ssize_t n = ::recv(c.socket.fd(), buffer, sizeof(buffer), 0);
    if (would_block(n)) return;
    if (n <= 0 || (c.dropped += static_cast<size_t>(n)) > kLingerBytes) c.phase = Connection::Phase::kDone;
  }
}

}  // namespace

HttpEndpoint::WakeFd::WakeFd() : fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (fd < 0) throw Error(Errc::kIo, std::string("metrics endpoint: eventfd: ") + std::strerror(errno));
}

HttpEndpoint::WakeFd::~WakeFd() { ::close(fd); }

HttpEndpoint::HttpEndpoint(const std::string& address, const std::string& flag, std::function<std::string()> render)
    : render_(std::move(render)) {
  auto fail = [&](const std::string& why) { throw Error(Errc::kInvalidArgument, flag + " " + address + ": " + why); };
  transport::SockAddr parsed;
  try {
    parsed = transport::SockAddr::parse(address);
  } catch (const Error& e) {
    fail(std::string(e.what()) + " (expected HOST:PORT, e.g. 127.0.0.1:9464)");
  }
  listener_ = transport::TcpSocket(::socket(parsed.get()->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listener_.valid()) fail(std::string("cannot open a socket: ") + std::strerror(errno));
  // SO_REUSEADDR (TIME_WAIT ports), not SO_REUSEPORT: a second process on the
  // same port must fail here, not take half the scrapes.
  int yes = 1;
  ::setsockopt(listener_.fd(), SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  if (::bind(listener_.fd(), parsed.get(), parsed.length()) != 0)
    fail("cannot listen there: " + std::string(errno == EADDRINUSE      ? "the port is in use"
                                               : errno == EADDRNOTAVAIL ? transport::host_of(parsed.to_string()) +
                                                                              " is not an address of this machine"
                                                                        : std::strerror(errno)));
  if (::listen(listener_.fd(), kBacklog) != 0) fail(std::string("cannot listen there: ") + std::strerror(errno));
  address_ = listener_.local_address().to_string();
  thread_ = std::thread([this] { serve(); });
}

HttpEndpoint::~HttpEndpoint() {
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_.fd, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
}

void HttpEndpoint::serve() {
  std::vector<Connection> open;
  std::vector<pollfd> polled;
  open.reserve(kMaxConnections);
  polled.reserve(kMaxConnections + 2);
  Clock::time_point accept_after{};  // out of descriptors: try again later
  for (uint64_t round = 1;; ++round) {
    polled.clear();
    polled.push_back({wake_.fd, POLLIN, 0});
    // Full slots of requests still arriving make room for a newcomer: the
    // oldest goes, once it had a poll round to send its request (a scrape's
    // arrives in one). Else clients that connect and send nothing held each
    // slot 2 s, and 40 of them delayed every scrape by 15 s.
    auto evictable = [&] {
      auto oldest = open.end();
      for (auto c = open.begin(); c != open.end(); ++c)
        if (c->phase == Connection::Phase::kRequest && c->round < round &&
            (oldest == open.end() || c->deadline < oldest->deadline))
          oldest = c;
      return oldest;
    };
    const bool full = open.size() >= kMaxConnections && evictable() == open.end();
    const bool backing_off = Clock::now() < accept_after;
    polled.push_back({full || backing_off ? -1 : listener_.fd(), POLLIN, 0});  // poll skips a negative fd
    // Full, only a connection's end frees a slot: accept_after (maybe long past) would make poll spin.
    Clock::time_point next = !full && backing_off ? accept_after : Clock::time_point::max();
    for (const Connection& c : open) {
      polled.push_back({c.socket.fd(), static_cast<short>(c.phase == Connection::Phase::kReply ? POLLOUT : POLLIN), 0});
      next = std::min(next, c.deadline);
    }
    const int timeout = next == Clock::time_point::max() ? -1 : ms_until(next);
    if (::poll(polled.data(), polled.size(), timeout) < 0 && errno != EINTR) {
      log(LogLevel::kWarn, std::string("metrics endpoint stopped: poll: ") + std::strerror(errno));
      return;
    }
    if (polled[0].revents) return;
    const size_t held = open.size();
    for (size_t i = 0; i < held; ++i) step(open[i], polled[i + 2].revents, render_);
    std::erase_if(open, [](const Connection& c) { return c.phase == Connection::Phase::kDone; });
    while (polled[1].revents) {
      const bool making_room = open.size() >= kMaxConnections;
      const auto oldest = making_room ? evictable() : open.end();
      if (making_room && oldest == open.end()) break;
      transport::TcpSocket s;
      try {
        s = listener_.try_accept(nullptr);
      } catch (const Error& e) {  // out of descriptors: the backlog waits a while
        log(LogLevel::kWarn, std::string("metrics endpoint: ") + e.what());
        accept_after = Clock::now() + std::chrono::milliseconds(100);
      }
      if (!s.valid()) break;
      if (making_room) open.erase(oldest);  // only for one that came
      open.push_back(
          Connection{std::move(s), Connection::Phase::kRequest, {}, {}, 0, 0, Clock::now() + kRequestTime, round});
    }
  }
}

}  // namespace rdmaps::metrics
