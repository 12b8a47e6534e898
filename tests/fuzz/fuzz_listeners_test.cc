// Fuzzing of what answers whoever reaches a port: the job's rendezvous host
// (src/launch/rendezvous.cc), which rank 0 runs at MASTER_ADDR:MASTER_PORT,
// and the metrics endpoint (src/metrics/http_endpoint.cc). Each input is the
// byte stream of one connection, sent to a real listener on loopback.
// Each input costs connections: a tenth or less of the other targets' inputs.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <thread>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "src/launch/rendezvous.h"
#include "src/launch/server_list.h"
#include "src/metrics/http_endpoint.h"
#include "src/metrics/http_reply.h"
#include "tests/common/free_port.h"
#include "tests/fuzz/fuzz_harness.h"
#include "tests/launch/local_placement.h"
#include "transport/tcp_socket.h"

namespace rdmaps::test {
namespace {

// ---- the rendezvous: length-prefixed requests, with a secret or without one
// (--insecure: requests are then read to their last field). The host answers
// each request in the protocol's words, lists in an "ok" only servers'
// addresses that a list typed by hand may hold, and keeps answering whatever
// came before.

using transport::TcpSocket;

constexpr uint32_t kWorld = 4, kServers = 2;

launch::Placement rank_zero(uint16_t port) {
  launch::Placement p = local_rank(0, kWorld, kServers, port);
  p.launch_id = "fuzz";
  return p;
}

Bytes framed_text(const std::vector<std::string>& messages) {
  Bytes out;
  for (const std::string& m : messages) {
    const auto n = static_cast<uint32_t>(m.size());
    out.insert(out.end(), reinterpret_cast<const uint8_t*>(&n), reinterpret_cast<const uint8_t*>(&n) + 4);
    out.insert(out.end(), m.begin(), m.end());
  }
  return out;
}

std::vector<Bytes> streams() {
  const std::string head = "rdmaps-rendezvous 4 ", nonce(64, 'a');
  const std::string challenge = head + "challenge";
  // The first byte picks the host: even, the one without a secret.
  auto on = [](char host, const Bytes& stream) {
    Bytes b{static_cast<uint8_t>(host)};
    b.insert(b.end(), stream.begin(), stream.end());
    return b;
  };
  return {
      // A worker asks before the servers registered, then server 0 and 1 register.
      on(0, framed_text({challenge, head + nonce + " - 4 2 3 - fuzz", head + nonce + " - 4 2 0 127.0.0.1:4000 fuzz",
                         head + nonce + " - 4 2 1 [::1]:4001 fuzz"})),
      // Another world size, then another launch.
      on(0, framed_text({challenge, head + nonce + " - 8 2 3 - fuzz"})),
      on(0, framed_text({challenge, head + nonce + " - 4 2 3 - other"})),
      // With a secret: a request proving none, then one proving a wrong one.
      on(1, framed_text({challenge, head + nonce + " - 4 2 3 - fuzz"})),
      on(1, framed_text({challenge, head + nonce + " " + std::string(64, '0') + " 4 2 3 - fuzz"})),
  };
}

/// Everything `fd` receives until its peer closes (or resets) it; nothing
/// where 5 s pass without a byte or a close.
std::optional<std::string> read_until_closed(int fd) {
  std::string got;
  for (char buffer[4096];;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) return std::nullopt;
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) return got;  // closed (or reset, once it refused)
    got.append(buffer, static_cast<size_t>(n));
  }
}

/// The answers to `stream`, sent on one connection and its sending side shut.
std::vector<std::string> answers(uint16_t port, const Bytes& stream) {
  TcpSocket s = TcpSocket::connect(transport::SockAddr::parse("127.0.0.1:" + std::to_string(port)),
                                   std::chrono::steady_clock::now() + std::chrono::seconds(5));
  if (!stream.empty() && ::send(s.fd(), stream.data(), stream.size(), MSG_NOSIGNAL) < 0) {
    // The host closed it already (a full request it refused): its answers are still there to read.
  }
  ::shutdown(s.fd(), SHUT_WR);
  const auto read = read_until_closed(s.fd());
  if (!read) throw std::runtime_error("the host neither answered nor closed in 5 s");
  const std::string& got = *read;
  std::vector<std::string> out;
  for (size_t at = 0; at + 4 <= got.size();) {
    uint32_t n = 0;
    std::memcpy(&n, got.data() + at, 4);
    if (at + 4 + n > got.size()) throw std::runtime_error("an answer cut short");
    out.push_back(got.substr(at + 4, n));
    at += 4 + n;
  }
  return out;
}

/// What is wrong with one answer of the host (empty: nothing).
std::string check_answer(const std::string& a, bool with_secret) {
  if (a.rfind("error ", 0) == 0) return {};  // to a request of another version, as every version answers
  const size_t space = a.find(' ');
  if (space == std::string::npos) return "an answer of one word";
  const std::string proof = a.substr(0, space), text = a.substr(space + 1);
  if (text.rfind("challenge ", 0) == 0)
    return proof == "-" && text.size() == 10 + 64 ? "" : "a challenge not of 32 bytes in hex";
  if (text.rfind("error ", 0) == 0) return {};
  if (proof.size() != (with_secret ? 64u : 1u))
    return "an answer's proof of " + std::to_string(proof.size()) + " chars";
  if (with_secret) return "an answer to a request that proved nothing";
  if (text.rfind("wait missing ", 0) == 0) {
    for (char c : text.substr(13))
      if (c != ',' && (c < '0' || c >= '0' + static_cast<int>(kServers))) return "a missing server that is none";
    return {};
  }
  if (text.rfind("ok ", 0) != 0) return "an answer in no word of the protocol";
  std::vector<std::string> servers;
  for (size_t at = 3;;) {
    const size_t comma = text.find(',', at);
    servers.push_back(text.substr(at, comma - at));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  if (servers.size() != kServers) return "an ok listing " + std::to_string(servers.size()) + " servers";
  try {
    launch::check_server_list(servers, "the rendezvous's answer");
  } catch (const Error& e) {
    return std::string("an ok listing what no server list may hold: ") + e.what();
  }
  return {};
}

TEST(Fuzz, RendezvousRequests) {
  const uint16_t port = free_port();
  set_log_sink([](LogLevel, const std::string&) {});  // each host says why it refused: 8,000 lines
  fuzz(
      "rendezvous",
      [&](const Bytes& input) -> std::string {
        if (input.empty()) throw Error(Errc::kProtocol, "no host picked");
        const bool with_secret = input[0] % 2;
        // A host of its own (0.2 ms): what an earlier input registered would answer its requests.
        launch::RendezvousHost host(rank_zero(port), with_secret ? kSecret : "");
        for (const std::string& a : answers(port, Bytes(input.begin() + 1, input.end())))
          if (std::string wrong = check_answer(a, with_secret); !wrong.empty()) return wrong + ": " + a.substr(0, 200);
        // Still answering, whatever came before.
        const auto again = answers(port, framed_text({"rdmaps-rendezvous 4 challenge"}));
        if (again.size() != 1 || !check_answer(again[0], with_secret).empty()) return "no challenge answered after it";
        return {};
      },
      10);
  set_log_sink(nullptr);
}

// ---- the metrics endpoint: a request head, sent in pieces -------------------------

/// The first byte sets the pieces' size (so a head's end may fall between two reads); the rest is sent.
std::vector<Bytes> scrapes() {
  std::vector<Bytes> s;
  for (const std::string& request :
       {std::string("GET /metrics HTTP/1.1\r\nHost: node7:9464\r\nAccept: text/plain\r\n\r\n"),
        std::string("HEAD /metrics HTTP/1.0\n\n"), std::string("GET /metrics HTTP/1.1\r\nX: y\n\nZ\r\n\r\n"),
        std::string("GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
        "GET /metrics HTTP/1.1\r\nX-Long: " + std::string(metrics::kMaxRequestHead, 'x') + "\r\n\r\n"}) {
    for (uint8_t piece : {uint8_t{0}, uint8_t{6}, uint8_t{37}}) {
      Bytes b{piece};
      b.insert(b.end(), request.begin(), request.end());
      s.push_back(std::move(b));
      if (request.size() > 1000) break;
    }
  }
  return s;
}

/// What the endpoint owes `data`, whatever pieces it came in: the reply to the
/// head up to its first blank line (CRLF CRLF, or LF LF), one to an oversized
/// head, or nothing where the connection ended before either.
std::optional<std::string> owed(const std::string& data, const std::string& page) {
  const size_t end = std::min(data.find("\r\n\r\n"), data.find("\n\n"));
  if (end != std::string::npos && end <= metrics::kMaxRequestHead)
    return metrics::reply_to(std::string_view(data).substr(0, end), [&] { return page; });
  if (data.size() >= metrics::kMaxRequestHead + 4) return std::string();  // a 431, checked by its status
  return std::nullopt;
}

TEST(Fuzz, MetricsEndpointConnections) {
  const std::string page = "rdmaps_up 1\n";
  metrics::HttpEndpoint endpoint("127.0.0.1:0", "--metrics", [&] { return page; });
  const auto at = transport::SockAddr::parse(endpoint.address());
  fuzz(
      "metrics-connection",
      [&](const Bytes& input) -> std::string {
        if (input.empty()) throw Error(Errc::kProtocol, "no piece size");
        const std::string data(input.begin() + 1, input.end());
        // At most 16 pieces, a moment apart, so that the endpoint reads them one by one.
        const size_t piece = std::max<size_t>(1 + input[0], (data.size() + 15) / 16);
        TcpSocket s = TcpSocket::connect(at, std::chrono::steady_clock::now() + std::chrono::seconds(5));
        const int one = 1;
        ::setsockopt(s.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        for (size_t from = 0; from < data.size(); from += piece) {
          if (from) std::this_thread::sleep_for(std::chrono::microseconds(30));
          if (::send(s.fd(), data.data() + from, std::min(piece, data.size() - from), MSG_NOSIGNAL) < 0) break;
        }
        ::shutdown(s.fd(), SHUT_WR);
        const auto read = read_until_closed(s.fd());
        if (!read) return "neither a reply nor a close in 5 s";
        const std::string& reply = *read;
        const auto want = owed(data, page);
        if (!want) return reply.empty() ? "" : "a reply to a head that never ended";
        if (want->empty()) return reply.rfind("HTTP/1.1 431 ", 0) == 0 ? "" : "an oversized head answered otherwise";
        if (reply != *want)
          return "the reply differs from the one its head is owed (" + reply.substr(0, reply.find('\r')) + " for " +
                 want->substr(0, want->find('\r')) + ")";
        return {};
      },
      20);
}

}  // namespace

std::map<std::string, Seeds> listener_seeds() {
  return {{"rendezvous", {streams(), {}}}, {"metrics-connection", {scrapes(), {}}}};
}

}  // namespace rdmaps::test
