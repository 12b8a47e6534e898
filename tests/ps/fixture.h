// Parameter-server tests: servers run in threads of the test process, workers
// are real processes (tests/peer_process.h) using the public Client API.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "rdmaps/client.h"
#include "rdmaps/server.h"
#include "tests/common/peer_process.h"

namespace rdmaps::test {

using namespace std::chrono_literals;

class ServerGroup {
 public:
  ServerGroup(uint32_t servers, uint32_t workers, const Config& config, const ServerOptions& base = {}) {
    for (uint32_t i = 0; i < servers; ++i) {
      ServerOptions o = base;
      o.listen = "127.0.0.1:0";
      o.index = i;
      o.servers = servers;
      o.workers = workers;
      o.config = config;
      if (o.config.secret.empty()) o.config.secret = test_secret();
      options_.push_back(o);
      servers_.push_back(std::make_unique<Server>(o));
    }
    for (auto& s : servers_) threads_.emplace_back([&s] { s->run(); });
  }
  /// Stops server `i` and starts another in its place, on its address, with
  /// `config` (a server restarted: with resume, or without); `between` runs
  /// while none serves there (its checkpoints edited, say).
  void restart(size_t i, const Config& config, const std::function<void()>& between = {}) {
    ServerOptions o = options_[i];
    o.listen = servers_[i]->address();
    o.config = config;
    if (o.config.secret.empty()) o.config.secret = test_secret();
    servers_[i]->stop();
    if (threads_[i].joinable()) threads_[i].join();
    servers_[i].reset();  // its listener closes
    if (between) between();
    servers_[i] = std::make_unique<Server>(o);
    threads_[i] = std::thread([s = servers_[i].get()] { s->run(); });
  }
  ~ServerGroup() { stop(); }
  void stop() {
    for (auto& s : servers_) s->stop();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  /// Waits until every server saw every worker leave (run() returned).
  void join() {
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  std::string addresses() const {
    std::string out;
    for (auto& s : servers_) out += (out.empty() ? "" : ",") + s->address();
    return out;
  }
  Server& server(size_t i) { return *servers_[i]; }
  size_t size() const { return servers_.size(); }

 private:
  std::vector<ServerOptions> options_;
  std::vector<std::unique_ptr<Server>> servers_;
  std::vector<std::thread> threads_;
};

/// A thread of this process: its id, name and the fields of its
/// /proc/self/task/TID/stat after "(name)": fields[N - 3] is proc(5)'s field N.
struct ThreadStat {
  int tid = 0;
  std::string name;
  std::vector<std::string> fields;
};
inline std::vector<ThreadStat> process_threads() {
  std::vector<ThreadStat> out;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    ThreadStat t;
    t.tid = std::stoi(task.path().filename());
    std::ifstream comm(task.path() / "comm");
    std::ifstream stat_file(task.path() / "stat");
    std::string stat;
    if (!std::getline(comm, t.name) || !std::getline(stat_file, stat)) continue;  // the thread ended
    std::istringstream fields(stat.substr(stat.rfind(')') + 1));
    for (std::string f; fields >> f;) t.fields.push_back(f);
    out.push_back(std::move(t));
  }
  return out;
}

inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, sep);) out.push_back(item);
  return out;
}

/// Worker options from a peer's arguments: extra[0] = server list, extra[1] = worker id.
inline ClientOptions worker_options(const PeerArgs& args, const Config& config) {
  ClientOptions o;
  o.servers = split(args.extra.at(0), ',');
  o.worker = static_cast<uint32_t>(std::stoul(args.extra.at(1)));
  o.config = config;
  o.config.transport = transport::transport_name(args.transport);
  if (o.config.secret.empty()) o.config.secret = test_secret();
  o.timeout = 60s;
  return o;
}

/// A worker in the test process of the servers at `addresses` (ServerGroup::addresses()).
inline ClientOptions local_worker_options(const std::string& addresses, const Config& config, uint32_t worker = 0) {
  ClientOptions o;
  o.servers = split(addresses, ',');
  o.worker = worker;
  o.config = config;
  if (o.config.secret.empty()) o.config.secret = test_secret();
  return o;
}

/// A client of one tensor `name`, connected once the server (a process just
/// started) listens; null if it never did within 20 s, after printing the
/// last attempt's error (a refusal is not "not listening yet").
inline std::unique_ptr<Client> connect_when_up(const ClientOptions& o, const std::string& name, size_t floats) {
  std::string last_error;
  for (auto until = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < until;) {
    try {
      auto client = std::make_unique<Client>(o);
      client->declare(name, floats);
      client->connect();
      return client;
    } catch (const Error& e) {  // not listening yet
      last_error = e.what();
      std::this_thread::sleep_for(50ms);
    }
  }
  std::fprintf(stderr, "connect_when_up: the last of the attempts failed with: %s\n", last_error.c_str());
  return nullptr;
}

/// A worker peer's body: connects with `config`, trains one step on a tensor
/// "w" of `floats`, then stays connected and idle until the test kills or
/// stops it.
inline int train_one_step_then_idle(const PeerArgs& args, const Config& config, size_t floats) {
  Client client(worker_options(args, config));
  client.declare("w", floats);
  client.connect();
  std::vector<float> w(floats, 1.0f);
  client.init("w", w);
  client.push("w", w);
  client.pull("w", w);
  std::this_thread::sleep_for(120s);
  return 0;
}

/// A server peer's body: `o` on the peer's port, with the test secret unless
/// `o` has one, serving on when its workers left (until the test kills it).
inline int serve_as_peer(const PeerArgs& args, ServerOptions o) {
  o.listen = "127.0.0.1:" + std::to_string(args.port);
  if (o.config.secret.empty()) o.config.secret = test_secret();
  o.exit_when_done = false;
  Server server(o);
  server.run();
  return 0;
}

/// SGD over `kind` with the given step and shard size; tests change the rest.
inline Config sgd_config(transport::TransportKind kind, float lr, uint32_t shard_floats) {
  Config c;
  c.transport = transport::transport_name(kind);
  c.rule = UpdateRule::kSgd;
  c.learning_rate = lr;
  c.shard_floats = shard_floats;
  return c;
}

/// The exact-SGD "steady_worker" peer (ps_faults_test.cc) and the servers it
/// trains against: any foreign update moves its parameters off the reference.
constexpr size_t kFaultFloats = 5000;
constexpr uint32_t kFaultShard = 2048;
constexpr int kSteadySteps = 60;
inline Config fault_config(transport::TransportKind kind) {
  Config c = sgd_config(kind, 0.05f, kFaultShard);
  c.staleness = kInfiniteStaleness;  // the rogue never clocks
  c.check_nan = true;
  return c;
}

class PsTest : public testing::TestWithParam<transport::TransportKind> {
 protected:
  Config config() const {
    Config c;
    c.transport = transport::transport_name(GetParam());
    return c;
  }
};

}  // namespace rdmaps::test
