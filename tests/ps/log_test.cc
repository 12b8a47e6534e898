// The library's one logger: levels, the sink a trainer installs, the
// environment's threshold, and lines from a real server reaching the sink.
#include "rdmaps/log.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "rdmaps/client.h"
#include "rdmaps/error.h"
#include "rdmaps/server.h"
#include "src/api/log_sink.h"
#include "tests/ps/fixture.h"

namespace rdmaps {
namespace {

struct Captured {
  std::mutex mutex;
  std::vector<std::pair<LogLevel, std::string>> lines;
  bool has(const std::string& text) {
    std::lock_guard<std::mutex> lock(mutex);
    for (const auto& [level, line] : lines)
      if (line.find(text) != std::string::npos) return true;
    return false;
  }
};

class LogTest : public testing::Test {
 protected:
  void SetUp() override {
    saved_ = log_level();
    set_log_sink([this](LogLevel level, const std::string& line) {
      std::lock_guard<std::mutex> lock(captured_.mutex);
      captured_.lines.emplace_back(level, line);
    });
  }
  void TearDown() override {
    set_log_sink(nullptr);
    set_log_level(saved_);
  }
  Captured captured_;
  LogLevel saved_ = LogLevel::kInfo;
};

TEST_F(LogTest, TheThresholdDropsLowerLevelsAndOffDropsAll) {
  set_log_level(LogLevel::kWarn);
  log(LogLevel::kInfo, "quiet");
  logf(LogLevel::kWarn, "loud %d", 7);
  log(LogLevel::kError, "louder");
  set_log_level(LogLevel::kOff);
  log(LogLevel::kError, "silenced");
  ASSERT_EQ(captured_.lines.size(), 2u);
  EXPECT_EQ(captured_.lines[0], std::make_pair(LogLevel::kWarn, std::string("loud 7")));
  EXPECT_EQ(captured_.lines[1].first, LogLevel::kError);
  EXPECT_FALSE(captured_.has("quiet"));
  EXPECT_FALSE(captured_.has("silenced"));
}

// An SGD server over shared memory plans no copy of its range per worker; a
// worker asking for active messages gets one all the same: said once, with
// the way to plan for it, and not for workers on the put path.
TEST_F(LogTest, AWorkerTakingACopyTheMemoryPlanDidNotCountIsSaidOnce) {
  set_log_level(LogLevel::kInfo);
  Config c = test::sgd_config(transport::TransportKind::kShm, 0.1f, 1024);
  test::ServerGroup servers(1, 3, c);
  Config am = c;
  am.push_path = PushPath::kAm;
  std::vector<std::unique_ptr<Client>> workers;
  for (uint32_t w = 0; w < 3; ++w) {
    workers.push_back(std::make_unique<Client>(test::local_worker_options(servers.addresses(), w == 0 ? c : am, w)));
    workers.back()->declare("w", 4096);
    workers.back()->connect();
  }
  EXPECT_FALSE(captured_.has("worker 0 takes a copy")) << "a put-path worker";
  EXPECT_TRUE(captured_.has("worker 1 takes a copy of this server's range ("));
  EXPECT_TRUE(
      captured_.has("that the memory plan did not count (it asked for the active-message push path: give the "
                    "server --push-path am to plan for it)"));
  EXPECT_FALSE(captured_.has("worker 2 takes")) << "said once";
}

// The start-up line of a server told no staleness bound, and no rule under
// --rule-from-workers, names them "from the first worker": what it took is
// said once that worker came; a server given both says nothing of the kind.
TEST_F(LogTest, WhatTheFirstWorkerSetIsSaidOnce) {
  set_log_level(LogLevel::kInfo);
  Config c = test::sgd_config(transport::TransportKind::kShm, 0.1f, 1024);
  ServerOptions adopting;
  adopting.rule_from_workers = true;
  Config job = c;
  job.staleness = 3;
  job.learning_rate = 0.5f;
  {
    test::ServerGroup servers(1, 2, c, adopting);
    for (uint32_t w = 0; w < 2; ++w) {
      Client worker(test::local_worker_options(servers.addresses(), job, w));
      worker.declare("w", 4096);
      worker.connect();
    }
    EXPECT_TRUE(
        captured_.has("rdmaps-server: worker 0 set the staleness bound 3 and the update rule: rule sgd, lr 0.5"));
    EXPECT_FALSE(captured_.has("worker 1 set")) << "said once";
  }
  captured_.lines.clear();
  Config told = job;
  told.staleness_stated = true;
  test::ServerGroup servers(1, 1, told);
  Client worker(test::local_worker_options(servers.addresses(), job, 0));
  worker.declare("w", 4096);
  worker.connect();
  EXPECT_FALSE(captured_.has(" set the ")) << "the server was given the bound and the rule";
}

TEST_F(LogTest, LongLinesAndThrowingSinksLoseNothing) {
  set_log_level(LogLevel::kDebug);
  const std::string long_text(2000, 'x');
  logf(LogLevel::kDebug, "%s!", long_text.c_str());
  ASSERT_EQ(captured_.lines.size(), 1u);
  EXPECT_EQ(captured_.lines[0].second, long_text + "!");
  set_log_sink([](LogLevel, const std::string&) { throw std::runtime_error("sink broke"); });
  EXPECT_NO_THROW(log(LogLevel::kError, "goes to stderr instead"));
}

// A peer's text in a line (a tensor name in a refusal) stays in that one
// line: a NUL cut it short, a newline or an escape forged lines of its own.
TEST_F(LogTest, ControlCharactersInALineAreShownNotObeyed) {
  log(LogLevel::kWarn, std::string("refused: tensor 'a\0b\n[fake] rdmaps-server: ok\x1b[2J' differs", 58));
  ASSERT_EQ(captured_.lines.size(), 1u);
  EXPECT_EQ(captured_.lines[0].second, "refused: tensor 'a?b?[fake] rdmaps-server: ok?[2J' differs");
  // Their UTF-8 forms too: C1 controls (NEL, CSI) and the line and paragraph separators.
  log(LogLevel::kWarn,
      "a\xc2\x85"
      "b\xe2\x80\xa8"
      "c\xe2\x80\xa9"
      "d\xc2\x9b[2J e\xc2\xa0\xe2\x80\xa7");
  ASSERT_EQ(captured_.lines.size(), 2u);
  EXPECT_EQ(captured_.lines[1].second, "a?b?c?d?[2J e\xc2\xa0\xe2\x80\xa7");
}

// A peer's bytes that are not UTF-8 (a tensor name 'w\xff'): Python's sink
// decodes a line strictly, and dropped it with a UnicodeDecodeError of its
// own. Valid characters of any length stay as they are.
TEST_F(LogTest, BytesThatAreNotUtf8AreShownNotPassedOn) {
  log(LogLevel::kWarn,
      "tensor 'w\xff\xfe', '\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80', cut '\xe2\x82', overlong '\xc0\xaf'");
  ASSERT_EQ(captured_.lines.size(), 1u);
  EXPECT_EQ(captured_.lines[0].second,
            "tensor 'w?\?', '\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80', cut '?\?', overlong '?\?'");
}

TEST_F(LogTest, LevelNamesParseAndBadOnesNameTheirSource) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError, LogLevel::kOff})
    EXPECT_EQ(parse_log_level(log_level_name(l), "x"), l);
  try {
    parse_log_level("loud", "RDMAPS_LOG_LEVEL");
    ADD_FAILURE() << "'loud' accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("RDMAPS_LOG_LEVEL: 'loud'"), std::string::npos) << e.what();
  }
}

// A server's lines (here: a worker joining and leaving) reach the sink, from
// the server's own threads.
TEST_F(LogTest, AServersLinesReachTheSink) {
  set_log_level(LogLevel::kInfo);
  ServerOptions so;
  so.listen = "127.0.0.1:0";
  so.config.transport = "tcp";
  Server server(so);
  std::thread serving([&] { server.run(); });
  {
    ClientOptions co;
    co.servers = {server.address()};
    co.config.transport = "tcp";
    Client client(co);
    client.declare("w", 100);
    client.connect();
  }
  serving.join();
  EXPECT_TRUE(captured_.has("connected, push path"));
  EXPECT_TRUE(captured_.has("left"));
  // UCX's padded columns ("md[0]                -> md[0]") came through as they are.
  EXPECT_FALSE(captured_.has("  ")) << "a line with a run of spaces";
}

// Runs `body` on a thread; false if it has not returned within 10 s (a
// deadlock: the thread is left behind, blocked).
bool returns(std::function<void()> body) {
  std::packaged_task<void()> task(std::move(body));
  auto done = task.get_future();
  std::thread(std::move(task)).detach();
  return done.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
}

// A one-shot sink that removes itself, and a sink that logs: both used to wait
// for the lock their own call held.
TEST_F(LogTest, ASinkMayReplaceItselfAndWhatItLogsGoesToStderr) {
  std::atomic<int> calls{0};
  set_log_sink([&](LogLevel, const std::string&) {
    ++calls;
    log(LogLevel::kError, "from inside the sink");
    set_log_sink(nullptr);
  });
  ASSERT_TRUE(returns([] { log(LogLevel::kError, "first"); })) << "a sink that logs or replaces itself deadlocked";
  log(LogLevel::kError, "second goes to stderr");
  EXPECT_EQ(calls.load(), 1);
}

// Python's handler takes the GIL, which a thread may hold while it logs (a
// Server constructor resuming). With the library's lock held around the
// sink, that thread waited for the lock while the lock's holder waited for
// the GIL.
TEST_F(LogTest, AConcurrentSinkDeadlocksWithNoThreadThatHoldsItsLockAndLogs) {
  std::recursive_mutex gil;
  std::atomic<bool> inside{false};
  std::atomic<int> lines{0};
  set_concurrent_log_sink([&](LogLevel, const std::string&) {
    inside = true;
    std::lock_guard<std::recursive_mutex> lock(gil);
    ++lines;
  });
  bool ok = returns([&] {
    std::unique_lock<std::recursive_mutex> holder(gil);
    std::thread lane([] { log(LogLevel::kError, "from a lane"); });
    while (!inside) std::this_thread::yield();  // the lane is in the sink, waiting for the "GIL"
    log(LogLevel::kError, "from the thread that holds it");
    holder.unlock();
    lane.join();
  });
  ASSERT_TRUE(ok) << "a thread holding the sink's own lock deadlocked when it logged";
  EXPECT_EQ(lines.load(), 2);
  set_concurrent_log_sink(nullptr);
}

// Once set_log_sink() returns, the old sink is not running: a C caller frees
// the callback's user data then.
TEST_F(LogTest, ReplacingASinkWaitsForTheLineItIsWriting) {
  std::promise<void> entered;
  std::promise<void> release;
  auto released = release.get_future().share();
  std::atomic<bool> old_done{false};
  set_log_sink([&](LogLevel, const std::string&) {
    entered.set_value();
    released.wait();
    old_done = true;
  });
  std::thread writer([] { log(LogLevel::kError, "slow line"); });
  entered.get_future().wait();
  auto replaced = std::async(std::launch::async, [] { set_log_sink(nullptr); });
  EXPECT_EQ(replaced.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout)
      << "set_log_sink returned while the old sink was still writing";
  release.set_value();
  replaced.get();
  EXPECT_TRUE(old_done.load());
  writer.join();
}

// A child forked while another thread was in the sink waited for that
// thread, which it does not have, at its first line or set_log_sink().
TEST_F(LogTest, AChildForkedWhileASinkWritesLogsAndReplacesTheSink) {
  std::promise<void> entered;
  std::promise<void> release;
  auto released = release.get_future().share();
  set_log_sink([&](LogLevel, const std::string&) {
    entered.set_value();
    released.wait();
  });
  std::thread writer([] { log(LogLevel::kError, "slow line"); });
  entered.get_future().wait();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(10);  // a hang ends as SIGALRM
    set_log_sink([](LogLevel, const std::string&) {});
    log(LogLevel::kError, "the child's line");
    set_log_sink(nullptr);
    ::_exit(0);
  }
  int status = -1;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  release.set_value();
  writer.join();
  ASSERT_TRUE(WIFEXITED(status)) << "the child hung (signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << ")";
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace rdmaps
