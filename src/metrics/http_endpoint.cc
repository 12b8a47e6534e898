#include "src/metrics/http_endpoint.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "rdmaps/error.h"
#include "src/metrics/exposition.h"
#include "transport/address.h"

namespace rdmaps::metrics {

namespace {

// httplib's default adds SO_REUSEPORT, which would let a second process bind
// the same port silently and take half the scrapes: reuse of TIME_WAIT ports
// is all we want.
void reuse_address_only(int sock) {
  int yes = 1;
  ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

// httplib's ThreadPool queues every accepted connection without limit, so
// idle connections (a scanner, a misconfigured scraper) could take every file
// descriptor of the server process, and with them its workers' connections.
// Here the accept loop waits while `max_queued` wait for a thread: the
// kernel's backlog holds the rest, and the process holds at most threads +
// max_queued + 1 of them.
class BoundedThreadPool final : public httplib::TaskQueue {
 public:
  BoundedThreadPool(size_t threads, size_t max_queued) : max_queued_(max_queued) {
    for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { serve(); });
  }
  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mu_);
    room_.wait(lock, [&] { return jobs_.size() < max_queued_; });
    jobs_.push_back(std::move(fn));
    work_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    work_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void serve() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_.wait(lock, [&] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;  // shut down, nothing left
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      room_.notify_one();
      fn();
    }
  }

  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable work_, room_;
  std::deque<std::function<void()>> jobs_;
  bool shutdown_ = false;
  std::vector<std::thread> threads_;
};

std::string host_of(const std::string& bound) {
  std::string host = bound.substr(0, bound.rfind(':'));
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return host;
}

}  // namespace

HttpEndpoint::HttpEndpoint(const std::string& address, const std::string& flag, std::function<std::string()> render)
    : http_(std::make_unique<httplib::Server>()) {
  auto fail = [&](const std::string& why) { throw Error(Errc::kInvalidArgument, flag + " " + address + ": " + why); };
  transport::SockAddr parsed;
  try {
    parsed = transport::SockAddr::parse(address);
  } catch (const Error& e) {
    fail(std::string(e.what()) + " (expected HOST:PORT, e.g. 127.0.0.1:9464)");
  }
  const std::string host = host_of(parsed.to_string());
  // Scrapes are rare and small: two threads (httplib's default is one per
  // core), and one request per connection so a scraper that keeps its
  // connection open cannot hold the only thread between scrapes.
  http_->new_task_queue = [] { return new BoundedThreadPool(2, kMaxQueued); };
  http_->set_keep_alive_max_count(1);
  // A scrape's request arrives whole in milliseconds: a sender slower than
  // this holds one of the two threads, and a body (GET has none) is read
  // into memory, so bodies past a few KiB are refused (413).
  http_->set_read_timeout(std::chrono::seconds(2));
  http_->set_payload_max_length(4096);
  http_->set_socket_options(reuse_address_only);
  http_->Get("/metrics", [render = std::move(render)](const httplib::Request&, httplib::Response& res) {
    try {
      res.set_content(render(), kContentType);
    } catch (const std::exception& e) {
      res.status = 500;
      res.set_content(std::string("rdmaps: metrics unavailable: ") + e.what() + "\n", "text/plain");
    }
  });
  const auto get_only = [](const httplib::Request& req, httplib::Response& res) {
    res.status = 405;
    res.set_header("Allow", "GET, HEAD");
    res.set_content("rdmaps: " + req.method + " " + req.path + ": metrics are read with GET\n", "text/plain");
  };
  http_->Post("/metrics", get_only);
  http_->Put("/metrics", get_only);
  http_->Patch("/metrics", get_only);
  http_->Delete("/metrics", get_only);
  http_->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.status == 404)
      res.set_content("rdmaps: no such path " + req.path + "; metrics are at /metrics\n", "text/plain");
  });
  errno = 0;
  int port = parsed.port();
  bool bound = false;
  if (port == 0) {
    port = http_->bind_to_any_port(host);
    bound = port > 0;
  } else {
    bound = http_->bind_to_port(host, port);
  }
  if (!bound)
    fail(std::string("cannot listen there: ") +
         (errno == EADDRINUSE ? "the port is in use"
          : errno             ? std::strerror(errno)
                              : "the port is in use or the host is not an address of this machine"));
  address_ = parsed.with_port(static_cast<uint16_t>(port)).to_string();
  thread_ = std::thread([this] {
    http_->listen_after_bind();
    ended_.store(true);
  });
  // stop() only takes effect once the loop runs: wait for it, so that the
  // destructor never joins a thread that has yet to start listening.
  while (!http_->is_running() && !ended_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

HttpEndpoint::~HttpEndpoint() {
  http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace rdmaps::metrics
