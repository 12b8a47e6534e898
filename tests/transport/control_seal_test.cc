// The control messages after a handshake with a secret are sealed: a relay
// that passed the handshake through unchanged (it sits where a worker dials:
// a forged launcher entry, a name that resolves to it) cannot change one.
#include "transport/control_seal.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "rdmaps/error.h"
#include "transport/context.h"
#include "transport/tcp_socket.h"

namespace rdmaps::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using transport::TcpSocket;

constexpr const char* kSecret = "a secret for this test only, long enough";

// Passes whole length-prefixed messages both ways between a client and `to`,
// flipping a byte of the client's message number `tamper` (0: the opening;
// 2: the first control message after the handshake), or none.
class Relay {
 public:
  Relay(const transport::SockAddr& to, int tamper)
      : listening_(TcpSocket::listen(transport::SockAddr::parse("127.0.0.1:0"))), to_(to), tamper_(tamper) {
    thread_ = std::thread([this] { run(); });
  }
  ~Relay() {
    stop_ = true;
    for (const auto* fd : {&client_fd_, &server_fd_})
      if (fd->load() >= 0) ::shutdown(fd->load(), SHUT_RDWR);
    thread_.join();
  }
  transport::SockAddr address() const { return listening_.local_address(); }

 private:
  void run() {
    while (!stop_ && !client_.valid()) {
      client_ = listening_.try_accept(nullptr);
      if (!client_.valid()) std::this_thread::sleep_for(1ms);
    }
    if (stop_) return;
    client_fd_ = client_.fd();
    server_ = TcpSocket::connect(to_, Clock::now() + 5s);
    server_fd_ = server_.fd();
    std::thread back([this] { pass(server_, client_, -1); });
    pass(client_, server_, tamper_);
    back.join();
  }
  void pass(const TcpSocket& from, const TcpSocket& to, int tamper) {
    try {
      for (int n = 0; !stop_; ++n) {
        std::vector<uint8_t> m = from.recv_message(Clock::now() + 20s, "relayed");
        if (n == tamper && !m.empty()) m[m.size() / 2] ^= 0x01;
        to.send_message(m, Clock::now() + 5s, "relayed");
      }
    } catch (const Error&) {
      ::shutdown(to.fd(), SHUT_RDWR);  // one side went: so does the other
    }
  }

  TcpSocket listening_, client_, server_;
  transport::SockAddr to_;
  int tamper_;
  std::atomic<bool> stop_{false};
  std::atomic<int> client_fd_{-1}, server_fd_{-1};  // for the destructor: the sockets are the thread's
  std::thread thread_;
};

struct Pair {
  std::unique_ptr<transport::Context> server, client;
  std::unique_ptr<transport::Listener> listener;
  std::unique_ptr<transport::Endpoint> accepted, connected;
};

// A client and a server with the secret, connected through a relay.
Pair through(int tamper, std::unique_ptr<Relay>& relay) {
  Pair p;
  const transport::ContextOptions o{.transport = transport::TransportKind::kTcp, .secret = kSecret};
  p.server = transport::create_context(o);
  p.client = transport::create_context(o);
  p.listener = p.server->listen(transport::SockAddr::parse("127.0.0.1:0"));
  relay = std::make_unique<Relay>(p.listener->address(), tamper);
  // A failure on either side fails the test, not the process (a thread's exception terminates it).
  auto connecting = std::async(std::launch::async, [&] { return p.client->connect(relay->address(), 10s); });
  try {
    p.accepted = p.listener->accept(10s);
  } catch (const Error& e) {
    ADD_FAILURE() << "accept: " << e.what();
  }
  try {
    p.connected = connecting.get();
  } catch (const Error& e) {
    ADD_FAILURE() << "connect: " << e.what();
  }
  return p;
}

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

TEST(ControlSeal, ARelayThatPassesEveryByteChangesNothing) {
  std::unique_ptr<Relay> relay;
  Pair p = through(-1, relay);
  ASSERT_TRUE(p.connected && p.accepted);
  p.connected->send_control(bytes("hello, lr 0.05"), 5s);
  EXPECT_EQ(p.accepted->recv_control(5s), bytes("hello, lr 0.05"));
  p.accepted->send_control(bytes("welcome"), 5s);
  EXPECT_EQ(p.connected->recv_control(5s), bytes("welcome"));
  p.connected->send_control(bytes("second"), 5s);
  std::optional<std::vector<uint8_t>> got;
  for (auto until = Clock::now() + 5s; !got && Clock::now() < until;) got = p.accepted->try_recv_control(1024);
  EXPECT_EQ(got, bytes("second"));
}

// Before the seal, the server took the changed Hello as the worker's: with
// --rule-from-workers, the job's rule was the relay's to choose.
TEST(ControlSeal, AControlMessageChangedOnTheWayIsRefused) {
  std::unique_ptr<Relay> relay;
  Pair p = through(2, relay);
  ASSERT_TRUE(p.connected && p.accepted) << "the handshake itself went through unchanged";
  p.connected->send_control(bytes("hello, lr 0.05"), 5s);
  try {
    const auto got = p.accepted->recv_control(5s);
    ADD_FAILURE() << "the changed message was taken: '" << std::string(got.begin(), got.end()) << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kPermissionDenied) << e.what();
    EXPECT_NE(std::string(e.what()).find("control message 1 from"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("fails its seal"), std::string::npos) << e.what();
  }
  // The same for the read a server's first message takes (try_recv_control), here the second one.
  std::unique_ptr<Relay> second_relay;
  Pair q = through(3, second_relay);
  ASSERT_TRUE(q.connected && q.accepted);
  q.connected->send_control(bytes("hello"), 5s);
  q.connected->send_control(bytes("lane hello"), 5s);
  EXPECT_EQ(q.accepted->recv_control(5s), bytes("hello"));
  std::string what = "taken";
  try {
    for (auto until = Clock::now() + 5s; Clock::now() < until;)
      if (q.accepted->try_recv_control(1024)) break;
  } catch (const Error& e) {
    what = e.what();
  }
  EXPECT_NE(what.find("control message 2 from"), std::string::npos) << what;
}

// Each side's seal is of its direction and number: a message reflected back,
// or replayed, or one of another connection, does not open.
TEST(ControlSeal, AReflectedReplayedOrForeignMessageDoesNotOpen) {
  const transport::Nonce a = transport::random_nonce(), b = transport::random_nonce();
  transport::ControlSeal client(kSecret, a, b, transport::ControlSeal::Side::kClient);
  transport::ControlSeal server(kSecret, a, b, transport::ControlSeal::Side::kServer);
  transport::ControlSeal other(kSecret, b, a, transport::ControlSeal::Side::kServer);
  const auto first = client.seal(bytes("one"));
  EXPECT_THROW(other.open(first, "peer"), Error) << "opened under another connection's nonces";
  EXPECT_THROW(client.open(first, "peer"), Error) << "a client's own message, reflected, opened";
  EXPECT_EQ(server.open(first, "peer"), bytes("one"));
  EXPECT_THROW(server.open(first, "peer"), Error) << "a replayed message opened";
  EXPECT_EQ(server.open(client.seal(bytes("two")), "peer"), bytes("two"));
  EXPECT_THROW(server.open(bytes("short"), "peer"), Error);
}

}  // namespace
}  // namespace rdmaps::test
