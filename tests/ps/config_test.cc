// Configuration: flags, RDMAPS_* variables, bad values naming their source.
#include "rdmaps/config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "rdmaps/client.h"
#include "rdmaps/error.h"
#include "rdmaps/server.h"
#include "src/ps/gpu_transfer.h"

namespace rdmaps::ps {
namespace {

// The staged path's default ring: 8 MiB in flight, never fewer than 3 chunks.
// --secret-file: the user's alone, like an ssh key, checked on the file it
// reads (it was checked by name, then opened again); one of another user's
// (who could read or change it) is refused as one others may read is.
TEST(Config, ASecretFileMustBeTheUsersAloneAndNamesWhatIsWrong) {
  const std::string dir = std::filesystem::temp_directory_path() / ("rdmaps-secret-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string file = dir + "/secret";
  std::ofstream(file) << "0123456789abcdef0123456789abcdef\r\nsecond line\n";
  auto read = [&](const std::string& path) {
    Config c;
    std::vector<std::string> rest;
    parse_config(c, {"--secret-file", path}, &rest);
    return c.secret;
  };
  auto refusal = [&](const std::string& path) {
    try {
      read(path);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kInvalidArgument);
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  ASSERT_EQ(::chmod(file.c_str(), 0600), 0);
  EXPECT_EQ(read(file), "0123456789abcdef0123456789abcdef");
  ASSERT_EQ(::chmod(file.c_str(), 0644), 0);
  EXPECT_NE(refusal(file).find("the secret file '" + file + "' has mode 0644: other users may read or change it"),
            std::string::npos)
      << refusal(file);
  ASSERT_EQ(::chmod(file.c_str(), 0600), 0);
  if (::geteuid() == 0) {  // only root can give a file away
    ASSERT_EQ(::chown(file.c_str(), 65534, 65534), 0);
    EXPECT_NE(refusal(file).find("belongs to uid 65534, not to this user (uid 0)"), std::string::npos) << refusal(file);
    ASSERT_EQ(::chown(file.c_str(), 0, 0), 0);
  }
  EXPECT_NE(refusal(dir).find("is not a regular file"), std::string::npos) << refusal(dir);
  ASSERT_EQ(::mkfifo((dir + "/fifo").c_str(), 0600), 0);
  EXPECT_NE(refusal(dir + "/fifo").find("is not a regular file"), std::string::npos);  // and returns at once
  EXPECT_NE(refusal(dir + "/none").find("cannot be read: No such file or directory"), std::string::npos);
  std::ofstream(dir + "/empty").flush();
  ASSERT_EQ(::chmod((dir + "/empty").c_str(), 0600), 0);
  EXPECT_NE(refusal(dir + "/empty").find("'" + dir + "/empty' is empty"), std::string::npos);
  // A secret on the second line was "empty or unreadable"; one past 4096 bytes was cut there without a word.
  std::ofstream(dir + "/empty") << "\n0123456789abcdef0123456789abcdef\n";
  EXPECT_NE(refusal(dir + "/empty").find("has an empty first line: the secret goes on the first line"),
            std::string::npos);
  std::ofstream(dir + "/empty", std::ios::trunc) << std::string(5000, 'x');
  EXPECT_NE(refusal(dir + "/empty").find("has a first line over 4095 bytes"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Config, StagingDepthCoversEightMebibytes) {
  EXPECT_EQ(ps::staging_depth_for(1u << 20), 8);
  EXPECT_EQ(ps::staging_depth_for(3u << 20), 3);
  EXPECT_EQ(ps::staging_depth_for(4u << 20), 3);
  EXPECT_EQ(ps::staging_depth_for(256u << 10), 32);
  EXPECT_EQ(ps::staging_depth_for(4096), 64);
}

// A Config built in code skipped every range its flags check: rule 7
// applied nothing without a word, inbox_slots 100000 sized 105 GB of inboxes
// for one worker, checkpoint_every_ms UINT64_MAX wrote 560 checkpoints a
// second, a 1-byte secret served off loopback. Server and Client refuse
// them, naming the field; the defaults pass.
TEST(Config, FieldsSetInCodePastTheirFlagsRangeAreRefusedByServerAndClient) {
  EXPECT_EQ(config_error(Config{}), "");
  const std::vector<std::pair<std::function<void(Config&)>, std::string>> cases = {
      {[](Config& c) { c.rule = static_cast<UpdateRule>(7); }, "Config::rule is 7, which names no value (0..3)"},
      {[](Config& c) { c.wire = static_cast<WireFormat>(-1); }, "Config::wire is -1"},
      {[](Config& c) { c.inbox_slots = 100000; }, "Config::inbox_slots is 100000, outside 1..1024"},
      {[](Config& c) { c.inbox_slots = 0; }, "Config::inbox_slots is 0"},
      {[](Config& c) { c.shard_floats = 0; }, "Config::shard_floats is 0, outside 1..268435456"},
      {[](Config& c) { c.checkpoint_keep = 0; }, "Config::checkpoint_keep is 0"},
      {[](Config& c) { c.checkpoint_every_ms = UINT64_MAX; }, "Config::checkpoint_every_ms is 18446744073709551615"},
      {[](Config& c) { c.secret = "x"; }, "Config::secret has 1 bytes, too easy to guess"},
      // A Client took it, and only its connect() failed.
      {[](Config& c) { c.transport = "bogus"; }, "Config::transport is 'bogus', not tcp, shm or auto"},
      // The rule's floats: config_error() said "" where the constructors refused them.
      {[](Config& c) { c.momentum = 2; }, "momentum 2 is not in [0, 1) (--momentum)"},
      {[](Config& c) { c.eps = -1; }, "eps -1 is not a positive number (--eps)"},
      {[](Config& c) { c.learning_rate = std::nanf(""); }, "lr nan is out of range"},
  };
  for (const auto& [set, said] : cases) {
    SCOPED_TRACE(said);
    Config checked;
    set(checked);
    EXPECT_NE(config_error(checked).find(said), std::string::npos) << config_error(checked);
    ServerOptions so;
    so.listen = "127.0.0.1:0";
    set(so.config);
    std::string what;
    try {
      Server server(so);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kInvalidArgument);
      what = e.what();
    }
    EXPECT_NE(what.find("ServerOptions::config: " + said), std::string::npos) << what;
    ClientOptions co;
    co.servers = {"127.0.0.1:9"};
    set(co.config);
    what.clear();
    try {
      Client client(co);
    } catch (const Error& e) {
      what = e.what();
    }
    EXPECT_NE(what.find("ClientOptions::config: " + said), std::string::npos) << what;
  }
  ServerOptions so;
  so.listen = "127.0.0.1:0";
  so.stats_interval = std::chrono::milliseconds(-1);  // a line every poll
  try {
    Server server(so);
    ADD_FAILURE() << "a negative stats_interval was taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ServerOptions::stats_interval is -1 ms"), std::string::npos) << e.what();
  }
}

// Both numbers are the client's own: worker 2 of 2 was taken, and only
// connect() failed, with the server's refusal as a protocol error.
TEST(Config, AWorkerIdNotBelowTheWorkersIsRefusedByTheClient) {
  ClientOptions co;
  co.servers = {"127.0.0.1:9"};
  co.worker = 2;
  co.workers = 2;
  try {
    Client client(co);
    ADD_FAILURE() << "worker 2 of 2 was taken";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("ClientOptions::worker 2 is not below ClientOptions::workers (2)"),
              std::string::npos)
        << e.what();
  }
  co.workers = 0;  // not checked
  EXPECT_NO_THROW(Client{co});
}

TEST(Config, FlagsAndEnvironmentParseAndBadValuesNameTheirSource) {
  Config c;
  std::vector<std::string> rest;
  parse_config(
      c, {"--staleness", "inf", "--rule", "dc-asgd-a", "--lr=0.5", "--check-nan", "--push-path", "am", "--other", "x"},
      &rest);
  EXPECT_EQ(c.staleness, kInfiniteStaleness);
  EXPECT_EQ(c.rule, UpdateRule::kDcAsgdAdaptive);
  EXPECT_FLOAT_EQ(c.learning_rate, 0.5f);
  EXPECT_TRUE(c.check_nan);
  EXPECT_EQ(c.push_path, PushPath::kAm);
  EXPECT_EQ(rest, (std::vector<std::string>{"--other", "x"}));

  auto message = [](std::vector<std::string> args) {
    Config cc;
    try {
      parse_config(cc, args, nullptr);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kInvalidArgument);
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message({"--rule", "adam"}).find("--rule"), std::string::npos);
  EXPECT_NE(message({"--staging-depth", "65"}).find("--staging-depth"), std::string::npos);
  // Without `rest`, a typo is refused by name (it was dropped, and the worker ran with the default).
  EXPECT_EQ(message({"--stalenes", "3"}), "unknown configuration flag '--stalenes'");
  parse_config(c, {"--staging-depth", "5"}, nullptr);
  EXPECT_EQ(c.staging_depth, 5u);
  // A leading zero is decimal as everywhere else (CLI11 read 010 as octal 8, and 08 could not convert).
  parse_config(c, {"--inbox-slots", "010", "--staging-depth", "08"}, nullptr);
  EXPECT_EQ(c.inbox_slots, 10u);
  EXPECT_EQ(c.staging_depth, 8u);
  EXPECT_NE(message({"--staleness", "-1"}).find("--staleness"), std::string::npos);
  EXPECT_NE(message({"--lr", "fast"}).find("'fast'"), std::string::npos);
  EXPECT_NE(message({"--shard-floats", "0"}).find("--shard-floats"), std::string::npos);
  EXPECT_NE(message({"--lr"}).find("needs a value"), std::string::npos);
  EXPECT_NE(message({"--ms-momentum", "1"}).find("--ms-momentum: '1' is not in [0, 1)"), std::string::npos);
  EXPECT_NE(message({"--momentum", "-0.5"}).find("--momentum"), std::string::npos);
  EXPECT_NE(message({"--put-landing", "maybe"}).find("--put-landing"), std::string::npos);
  EXPECT_EQ(Config{}.put_landing, PutLanding::kAuto);
  parse_config(c, {"--put-landing", "on"}, nullptr);
  EXPECT_EQ(c.put_landing, PutLanding::kOn);
  Config on;
  parse_config(on, {"--ms-bias-correction", "--rule", "dc-asgd-a"}, nullptr);
  EXPECT_TRUE(on.ms_bias_correction);
  EXPECT_NE(describe(on).find("ms-bias-correction on"), std::string::npos);
  EXPECT_NE(message({"--ms-bias-correction=maybe"}).find("--ms-bias-correction: 'maybe' is not on or off"),
            std::string::npos);
  EXPECT_NE(message({"--eps", "0"}).find("--eps: '0' is not a positive number"), std::string::npos);
  // The robust DC-ASGD-a is the default; the paper's exact formula is two flags away.
  Config defaults;
  EXPECT_TRUE(defaults.ms_bias_correction);
  EXPECT_FLOAT_EQ(defaults.dc_bound, 1.0f);
  EXPECT_FLOAT_EQ(defaults.dc_tau0, 4.0f);
  EXPECT_FLOAT_EQ(defaults.dc_lambda0, 32.0f);
  EXPECT_FALSE(defaults.skip_pulls) << "SSP pulls every clock unless asked to skip";
  Config paper;
  parse_config(paper,
               {"--rule", "dc-asgd-a", "--ms-bias-correction", "off", "--dc-bound", "off", "--dc-tau0", "off",
                "--staleness", "3", "--skip-pulls"},
               nullptr);
  EXPECT_FALSE(paper.ms_bias_correction);
  EXPECT_EQ(paper.dc_bound, 0.0f);
  EXPECT_EQ(paper.dc_tau0, 0.0f);
  EXPECT_NE(describe(paper).find("dc-tau0 off"), std::string::npos) << describe(paper);
  EXPECT_NE(message({"--dc-tau0", "0.5"}).find("--dc-tau0: '0.5' is not a staleness of at least 1 or off"),
            std::string::npos);
  EXPECT_TRUE(paper.skip_pulls);
  EXPECT_NE(describe(paper).find("dc-bound off"), std::string::npos) << describe(paper);
  EXPECT_NE(describe(paper).find("skip-pulls on"), std::string::npos) << describe(paper);
  EXPECT_NE(message({"--dc-bound", "0"}).find("--dc-bound: '0' is not a positive bound or off"), std::string::npos);
  EXPECT_NE(message({"--dc-bound", "-1"}).find("--dc-bound"), std::string::npos);
  // An option given no value took the next flag for it (an unset $DIR made a
  // directory "--resume" and the server started without resuming).
  EXPECT_EQ(message({"--checkpoint-dir", "--resume"}),
            "--checkpoint-dir needs a value, and '--resume' is a flag (to mean it as the value, write "
            "--checkpoint-dir=--resume)");
  Config odd;
  parse_config(odd, {"--checkpoint-dir=--odd"}, &rest);
  EXPECT_EQ(odd.checkpoint_dir, "--odd");
  setenv("RDMAPS_TAU_MAX", "many", 1);
  EXPECT_NE(message({}).find("RDMAPS_TAU_MAX"), std::string::npos);
  unsetenv("RDMAPS_TAU_MAX");
}

}  // namespace
}  // namespace rdmaps::ps
