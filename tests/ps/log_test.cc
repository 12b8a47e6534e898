// The library's one logger: levels, the sink a trainer installs, the
// environment's threshold, and lines from a real server reaching the sink.
#include "rdmaps/log.h"

#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "rdmaps/client.h"
#include "rdmaps/error.h"
#include "rdmaps/server.h"

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

TEST_F(LogTest, LongLinesAndThrowingSinksLoseNothing) {
  set_log_level(LogLevel::kDebug);
  const std::string long_text(2000, 'x');
  logf(LogLevel::kDebug, "%s!", long_text.c_str());
  ASSERT_EQ(captured_.lines.size(), 1u);
  EXPECT_EQ(captured_.lines[0].second, long_text + "!");
  set_log_sink([](LogLevel, const std::string&) { throw std::runtime_error("sink broke"); });
  EXPECT_NO_THROW(log(LogLevel::kError, "goes to stderr instead"));
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
}

}  // namespace
}  // namespace rdmaps
