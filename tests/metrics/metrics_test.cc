// The Prometheus text writer and the /metrics HTTP endpoint, on their own.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "rdmaps/error.h"
#include "src/metrics/exposition.h"
#include "src/metrics/http_endpoint.h"
#include "src/metrics/render.h"

using rdmaps::metrics::Exposition;

namespace {

std::string error_of(const std::string& address) {
  try {
    rdmaps::metrics::HttpEndpoint e(address, "--metrics", [] { return std::string(); });
  } catch (const rdmaps::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Exposition, CounterHasHelpTypeAndLabels) {
  Exposition e;
  e.family("rdmaps_pushes_total", "Pushes applied.", "counter",
           {{{{"worker", "0"}}, 3}, {{{"worker", "1"}}, 12345678}});
  EXPECT_EQ(e.text(),
            "# HELP rdmaps_pushes_total Pushes applied.\n"
            "# TYPE rdmaps_pushes_total counter\n"
            "rdmaps_pushes_total{worker=\"0\"} 3\n"
            "rdmaps_pushes_total{worker=\"1\"} 12345678\n");
}

TEST(Exposition, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(rdmaps::metrics::escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  Exposition e;
  e.family("x", "back\\slash\nnewline \"quotes stay\"", "gauge", {{{{"path", "C:\\dir \"x\"\n"}}, 1.5}});
  EXPECT_EQ(e.text(),
            "# HELP x back\\\\slash\\nnewline \"quotes stay\"\n"
            "# TYPE x gauge\n"
            "x{path=\"C:\\\\dir \\\"x\\\"\\n\"} 1.5\n");
}

TEST(Exposition, ValuesReadBackExactly) {
  EXPECT_EQ(rdmaps::metrics::format_value(0), "0");
  EXPECT_EQ(rdmaps::metrics::format_value(9007199254740991.0), "9007199254740991");
  EXPECT_EQ(rdmaps::metrics::format_value(1e-6), "1e-06");
  EXPECT_EQ(rdmaps::metrics::format_value(0.1), "0.1");
  EXPECT_EQ(rdmaps::metrics::format_value(1.0 / 0.0), "+Inf");
}

TEST(Exposition, HistogramBucketsAreCumulative) {
  Exposition e;
  // 2 at <= 0, 0 in (0, 1], 5 in (1, 4], 3 above 4.
  e.histogram("h", "A histogram.", {0, 1, 4}, {2, 0, 5, 3}, 42);
  EXPECT_EQ(e.text(),
            "# HELP h A histogram.\n"
            "# TYPE h histogram\n"
            "h_bucket{le=\"0\"} 2\n"
            "h_bucket{le=\"1\"} 2\n"
            "h_bucket{le=\"4\"} 7\n"
            "h_bucket{le=\"+Inf\"} 10\n"
            "h_sum 42\n"
            "h_count 10\n");
}

TEST(Exposition, ServerStalenessFoldsIntoCumulativeBuckets) {
  rdmaps::ServerStats s;
  s.staleness.assign(257, 0);
  s.staleness[0] = 4;
  s.staleness[5] = 2;    // into le="6"
  s.staleness[255] = 1;  // le="255"
  s.staleness[256] = 3;  // tau >= 256: only +Inf
  s.staleness_sum = 5 * 2 + 255 + 3 * 300;
  rdmaps::ServerOptions o;
  const std::string text = rdmaps::metrics::render_server_metrics(s, o);
  EXPECT_NE(text.find("rdmaps_staleness_bucket{le=\"0\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rdmaps_staleness_bucket{le=\"4\"} 4\n"), std::string::npos);
  EXPECT_NE(text.find("rdmaps_staleness_bucket{le=\"6\"} 6\n"), std::string::npos);
  EXPECT_NE(text.find("rdmaps_staleness_bucket{le=\"192\"} 6\n"), std::string::npos);
  EXPECT_NE(text.find("rdmaps_staleness_bucket{le=\"255\"} 7\n"), std::string::npos);
  EXPECT_NE(text.find("rdmaps_staleness_bucket{le=\"+Inf\"} 10\n"), std::string::npos);
  EXPECT_NE(text.find("rdmaps_staleness_count 10\n"), std::string::npos);
  EXPECT_NE(text.find("rdmaps_staleness_sum 1165\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE rdmaps_staleness histogram\n"), std::string::npos);
}

TEST(HttpEndpoint, ServesMetricsAndNotFound) {
  rdmaps::metrics::HttpEndpoint endpoint("127.0.0.1:0", "--metrics", [] { return std::string("up 1\n"); });
  const std::string address = endpoint.address();
  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  ASSERT_GT(port, 0);
  httplib::Client client("127.0.0.1", port);
  auto ok = client.Get("/metrics");
  ASSERT_TRUE(ok) << httplib::to_string(ok.error());
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(ok->body, "up 1\n");
  auto missing = client.Get("/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
}

TEST(HttpEndpoint, BadAddressesNameTheFlagAndAddress) {
  const std::string no_port = error_of("nohost");
  EXPECT_NE(no_port.find("--metrics nohost"), std::string::npos) << no_port;
  EXPECT_NE(no_port.find("HOST:PORT"), std::string::npos) << no_port;
  const std::string bad_host = error_of("no.such.host.invalid:9100");
  EXPECT_NE(bad_host.find("--metrics no.such.host.invalid:9100"), std::string::npos) << bad_host;
  const std::string bad_port = error_of("127.0.0.1:99999");
  EXPECT_NE(bad_port.find("--metrics 127.0.0.1:99999"), std::string::npos) << bad_port;
}

TEST(HttpEndpoint, PortInUseIsAnError) {
  // Another process's listener, as a plain socket without SO_REUSEPORT.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string address = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  const std::string why = error_of(address);
  ::close(fd);
  EXPECT_NE(why.find("--metrics " + address), std::string::npos) << why;
  EXPECT_NE(why.find("in use"), std::string::npos) << why;
  // And a second endpoint on the first one's port.
  rdmaps::metrics::HttpEndpoint first("127.0.0.1:0", "--metrics", [] { return std::string(); });
  EXPECT_NE(error_of(first.address()).find("in use"), std::string::npos);
}

namespace {
size_t open_fds() {
  size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) n += entry.is_symlink() ? 1 : 0;
  return n;
}
}  // namespace

// Idle connections (a port scanner, a scraper that never sends) wait in the
// kernel's backlog, not in the process: the endpoint accepts at most its two
// threads' worth plus kMaxQueued, so it cannot take the file descriptors the
// server's workers need. It used to accept all of them (250 of 250).
TEST(HttpEndpoint, IdleConnectionsCannotTakeTheProcesssFileDescriptors) {
  rdmaps::metrics::HttpEndpoint endpoint("127.0.0.1:0", "--metrics", [] { return std::string("up 1\n"); });
  const std::string address = endpoint.address();
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1))));
  const size_t before = open_fds();
  constexpr size_t kIdle = 250;
  std::vector<int> idle;
  for (size_t i = 0; i < kIdle; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));  // in progress or done: either is fine
    idle.push_back(fd);
  }
  std::this_thread::sleep_for(
      std::chrono::milliseconds(4000));  // SYNs refused by a full backlog are sent again after 1 and 3 s
  const size_t accepted = open_fds() - before - kIdle;
  for (int fd : idle) ::close(fd);
  EXPECT_LE(accepted, 2 + rdmaps::metrics::HttpEndpoint::kMaxQueued + 1)
      << accepted << " idle connections accepted into the process";
  // And it serves once they are gone.
  httplib::Client client("127.0.0.1", std::stoi(address.substr(address.rfind(':') + 1)));
  auto ok = client.Get("/metrics");
  ASSERT_TRUE(ok) << httplib::to_string(ok.error());
  EXPECT_EQ(ok->status, 200);
}
