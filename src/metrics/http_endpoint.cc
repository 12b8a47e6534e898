#include "src/metrics/http_endpoint.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
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
//
// With every slot held, a newcomer makes room: the endpoint keeps accepting
// and closes one that had its turn, in any phase: a reply that is out first,
// then the connection that has gone longest without progress. Were full
// slots to stop accepting, the kernel's backlog would fill and a scraper's
// SYN be dropped, to wait out TCP's retransmission back-off: clients that
// sent a request and never read its reply held their slots for 1 s (linger)
// or 10 s (reply), and the backlog behind them, and a scrape took 19 s. A
// reply its reader does not take while others wait is worth less than the
// next scrape; without newcomers no one is closed before its deadline.
namespace rdmaps::metrics {

namespace {

using Clock = std::chrono::steady_clock;

// Every endpoint's listening socket, let go of in a child made by fork(): a
// trainer's DataLoader workers held the port after the trainer closed its
// endpoint, so scrapes connected and hung, and a new endpoint found the port
// in use. The child's copy is replaced by /dev/null rather than closed, so
// that the number stays taken: a child that destroys its copy of the
// endpoint (it should not: its thread is the parent's) closes that.
class ForkedListeners {
 public:
  static ForkedListeners& get() {
    static ForkedListeners* const listeners = new ForkedListeners;  // never destroyed: fork may come at exit
    return *listeners;
  }
  void add(int fd) {
    const std::lock_guard<std::mutex> lock(mu_);
    fds_.push_back(fd);
  }
  void remove(int fd) {
    const std::lock_guard<std::mutex> lock(mu_);
    std::erase(fds_, fd);
  }

 private:
  // /dev/null is opened here, once: a child forked at the descriptor limit
  // could not open it and kept the port.
  ForkedListeners() : null_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {
    fds_.reserve(8);
    ::pthread_atfork([] { get().mu_.lock(); }, [] { get().mu_.unlock(); },
                     [] {
                       ForkedListeners& self = get();
                       for (const int fd : self.fds_)
                         if (self.null_ < 0 || ::dup3(self.null_, fd, O_CLOEXEC) < 0)
                           ::close(fd);  // else the number stays taken
                       self.mu_.unlock();
                     });
  }
  std::mutex mu_;  // held across fork(): the child finds the list whole
  std::vector<int> fds_;
  const int null_;
};

// A scrape's request arrives whole in milliseconds.
constexpr auto kRequestTime = std::chrono::seconds(2);
// But not always within a poll round: on a loaded host the scraper may not
// have run since its connect. Closed to make room before this, such scrapes
// got an empty reply (50 scrapers on 2 cores: 930 of 37 588); waiting in the
// backlog instead, they are answered.
constexpr auto kRequestGrace = std::chrono::milliseconds(200);
// A page is kilobytes; a reader this slow is not a scraper.
constexpr auto kReplyTime = std::chrono::seconds(10);
// After the reply, what the client still sends (a body we did not read) is
// read and dropped for a moment, so that closing with unread bytes does not
// reset the connection before the client has read the reply.
constexpr auto kLingerTime = std::chrono::seconds(1);
constexpr size_t kLingerBytes = 1u << 20;
// The kernel's most: newcomers wait their turn in it. At 16, clients that
// reconnect as soon as they are closed overflowed it, and a scraper's SYN,
// dropped, waited out TCP's retries (no connection in 20 s behind 40 such).
constexpr int kBacklog = SOMAXCONN;

struct Connection {
  enum class Phase { kRequest, kReply, kLinger, kDone };
  transport::TcpSocket socket;
  Phase phase = Phase::kRequest;
  std::string head;  // the request so far; never more than kMaxRequestHead + one read
  std::string reply;
  size_t sent = 0, dropped = 0;
  Clock::time_point deadline;
  // The poll round of its last progress: accepted, or its reader took some of
  // the reply. Only one that had a round since may be closed to make room.
  uint64_t round = 0;
};

int ms_until(Clock::time_point t) {
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(t - Clock::now()).count();
  return static_cast<int>(std::clamp<decltype(ms)>(ms, 0, 60'000));
}

bool would_block(ssize_t n) { return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR); }

// Sends what the socket takes now; true once the reply is out.
bool send_some(Connection& c, uint64_t round) {
  while (c.sent < c.reply.size()) {
    const ssize_t n = ::send(c.socket.fd(), c.reply.data() + c.sent, c.reply.size() - c.sent, MSG_NOSIGNAL);
    if (would_block(n)) return false;
    if (n <= 0) {
      c.phase = Connection::Phase::kDone;
      return false;
    }
    c.sent += static_cast<size_t>(n);
    c.round = round;
  }
  return true;
}

// Ends the connection for the client whoever else holds the socket: a close
// alone sends no FIN while a forked child (a DataLoader worker) has a copy,
// and the client waited for its own timeout.
void hang_up(const Connection& c) { ::shutdown(c.socket.fd(), SHUT_RDWR); }

// Moves one connection on by what poll() reported.
void step(Connection& c, short revents, uint64_t round, const std::function<std::string()>& render) {
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
    // The first blank line, CRLF or bare LF: the later one, taken where both
    // arrived in one read, gave another reply than the same bytes in two.
    const size_t end = std::min(c.head.find("\r\n\r\n", searched), c.head.find("\n\n", searched));
    if (end != std::string::npos && end <= kMaxRequestHead) {
      c.reply = reply_to(std::string_view(c.head).substr(0, end), render);
    } else if (c.head.size() >= kMaxRequestHead + 4) {  // no blank line within the limit can still end here
      c.reply = reply_to_oversized_head(c.head);
    } else {
      return;
    }
    c.head = std::string();
    c.phase = Connection::Phase::kReply;
    c.deadline = Clock::now() + kReplyTime;
    revents = POLLOUT;  // try at once: the socket's buffer usually takes it all
  }
  if (c.phase == Connection::Phase::kReply && revents) {
    if (!send_some(c, round)) return;
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

HttpEndpoint::HttpEndpoint(const std::string& address, const std::string& flag, std::function<std::string()> render)
    : render_(std::move(render)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!wake_.valid()) throw Error(Errc::kIo, std::string("metrics endpoint: eventfd: ") + std::strerror(errno));
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
  // Read-only counters, but anyone on the workers' network reads them (docs/security.md).
  if (parsed.is_any())
    log(LogLevel::kWarn, "metrics endpoint " + flag + " " + address +
                             ": serves on every interface, without authentication; give it loopback or a "
                             "management network's address (docs/security.md)");
  // Registered before the thread starts: a throw after it destroyed a
  // joinable thread (std::terminate), and a throw here leaves no number behind.
  ForkedListeners::get().add(listener_.fd());
  try {
    thread_ = std::thread([this] { serve(); });
  } catch (...) {
    ForkedListeners::get().remove(listener_.fd());
    throw;
  }
}

HttpEndpoint::~HttpEndpoint() {
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  ForkedListeners::get().remove(listener_.fd());
}

void HttpEndpoint::serve() {
  std::vector<Connection> open;
  std::vector<pollfd> polled;
  open.reserve(kMaxConnections + 1);  // a newcomer is accepted before the one it replaces goes
  polled.reserve(kMaxConnections + 2);
  Clock::time_point accept_after{};  // out of descriptors: try again later
  Clock::time_point accept_warned = Clock::now() - std::chrono::hours(1);
  uint64_t accept_unsaid = 0;  // accept failures not logged since accept_warned
  for (uint64_t round = 1;; ++round) {
    polled.clear();
    polled.push_back({wake_.get(), POLLIN, 0});
    // Full slots make room for a newcomer, whatever their phase: a reply that
    // is out (lingering) goes first, as nothing more is owed to it; then the
    // request or reply whose last progress is oldest, once it had a poll round
    // since (a scrape's request arrives in one, and a reader that takes its
    // reply makes progress in each). Else clients that connect and send
    // nothing held each slot 2 s (40 of them delayed every scrape by 15 s),
    // and clients that send a request and never read held theirs and the
    // backlog behind them (a scrape behind 12 such took 19 s).
    auto evictable = [&] {
      auto oldest = open.end();
      auto before = [](const Connection& a, const Connection& b) {
        const bool a_out = a.phase == Connection::Phase::kLinger, b_out = b.phase == Connection::Phase::kLinger;
        return a_out != b_out ? a_out : a.round < b.round;
      };
      const auto now = Clock::now();
      // A request's deadline is kRequestTime from its accept.
      auto young = [&](const Connection& c) {
        return c.phase == Connection::Phase::kRequest && now - (c.deadline - kRequestTime) < kRequestGrace;
      };
      for (auto c = open.begin(); c != open.end(); ++c)
        if (c->round < round && !young(*c) && (oldest == open.end() || before(*c, *oldest))) oldest = c;
      return oldest;
    };
    // Every connection had a round by now (the last round's are evictable,
    // requests once past kRequestGrace), so full slots stop accepting only
    // while every one is a request that young: newcomers wait in the backlog
    // until the first of them can go. Poll still sleeps: the listener wakes
    // it only for a newcomer.
    const auto polled_at = Clock::now();
    Clock::time_point room_at = polled_at;  // when a full house may make room
    if (open.size() >= kMaxConnections) {
      room_at = Clock::time_point::max();
      for (const Connection& c : open)
        room_at = std::min(
            room_at, c.phase == Connection::Phase::kRequest ? c.deadline - kRequestTime + kRequestGrace : polled_at);
    }
    const bool backing_off = polled_at < accept_after, no_room = polled_at < room_at;
    polled.push_back({backing_off || no_room ? -1 : listener_.fd(), POLLIN, 0});  // poll skips a negative fd
    Clock::time_point next = backing_off ? accept_after : no_room ? room_at : Clock::time_point::max();
    for (const Connection& c : open) {
      polled.push_back({c.socket.fd(), static_cast<short>(c.phase == Connection::Phase::kReply ? POLLOUT : POLLIN), 0});
      next = std::min(next, c.deadline);
    }
    const int timeout = next == Clock::time_point::max() ? -1 : ms_until(next);
    if (::poll(polled.data(), polled.size(), timeout) < 0 && errno != EINTR) {
      log(LogLevel::kWarn, std::string("metrics endpoint stopped: poll: ") + std::strerror(errno));
      return;
    }
    if (polled[0].revents) {
      for (const Connection& c : open) hang_up(c);
      return;
    }
    const size_t held = open.size();
    for (size_t i = 0; i < held; ++i) step(open[i], polled[i + 2].revents, round, render_);
    std::erase_if(open, [](const Connection& c) {
      if (c.phase != Connection::Phase::kDone) return false;
      hang_up(c);
      return true;
    });
    while (polled[1].revents) {
      const bool making_room = open.size() >= kMaxConnections;
      const auto oldest = making_room ? evictable() : open.end();
      if (making_room && oldest == open.end()) break;
      transport::TcpSocket s;
      try {
        s = listener_.try_accept(nullptr);
      } catch (const Error& e) {  // out of descriptors: the backlog waits a while
        // Said once per 10 s with the count between: every 100 ms flooded the log.
        const auto now = Clock::now();
        if (now - accept_warned >= std::chrono::seconds(10)) {
          log(LogLevel::kWarn,
              std::string("metrics endpoint: ") + e.what() +
                  (accept_unsaid ? " (and " + std::to_string(accept_unsaid) + " times since the last line)"
                                 : std::string()));
          accept_warned = now;
          accept_unsaid = 0;
        } else {
          ++accept_unsaid;
        }
        accept_after = now + std::chrono::milliseconds(100);
      }
      if (!s.valid()) break;
      if (making_room) {  // only for one that came
        hang_up(*oldest);
        open.erase(oldest);
      }
      open.push_back(
          Connection{std::move(s), Connection::Phase::kRequest, {}, {}, 0, 0, Clock::now() + kRequestTime, round});
    }
  }
}

}  // namespace rdmaps::metrics
