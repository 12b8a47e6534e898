// Checkpoints: the file (round trip, torn, corrupt and unfinished files
// skipped with a message, pruning) and a real server process killed and
// restarted from it while its worker goes on.
#include "src/ps/checkpoint.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "src/ps/update_rules.h"
#include "tests/common/log_watch.h"
#include "tests/common/sanitizers.h"
#include "tests/common/update_reference.h"
#include "tests/ps/fixture.h"
#include "tests/transport/fixture.h"
#include "transport/auth.h"

namespace rdmaps::test {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

std::string temp_dir() {
  std::string pattern = (fs::temp_directory_path() / "rdmaps-ckpt-XXXXXX").string();
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  return pattern;
}

ps::CheckpointHeader sample_header(uint64_t sequence) {
  ps::CheckpointHeader h;
  h.index = 1;
  h.servers = 2;
  h.shard_floats = 4;
  h.staleness = 3;
  h.rule.rule = static_cast<uint32_t>(UpdateRule::kDcAsgdAdaptive);
  h.rule.learning_rate = 0.5f;
  h.tensors = {{"a", 10}, {"b", 6}};
  h.sequence = sequence;
  h.unix_ms = 1234567;
  h.versions = {7, 8};  // server 1 of 2 holds floats [8, 16): two shards of 4
  h.workers = {{ps::WorkerState::kConnected, 5, 11}, {ps::WorkerState::kGone, 4, 3}};
  return h;
}

std::string write_sample(const std::string& dir, const ps::CheckpointHeader& h, float base) {
  std::vector<float> p1{base, base + 1, base + 2}, p2{base + 3, base + 4, base + 5, base + 6, base + 7};
  std::vector<float> s1(3, 0.25f), s2(5, 0.5f);
  ps::FloatRuns runs;
  runs.params = {p1, p2};
  runs.state = {s1, s2};
  return ps::write_checkpoint(dir, h, runs);
}

std::string write_sample(const std::string& dir, uint64_t sequence, float base) {
  return write_sample(dir, sample_header(sequence), base);
}

std::vector<char> bytes_of(const std::string& path) {
  std::vector<char> bytes(fs::file_size(path));
  std::ifstream(path, std::ios::binary).read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return bytes;
}

// Writes `bytes` to `path` with their SHA-256 made anew over all but the last 32.
void rewrite_signed(const std::string& path, std::vector<char> bytes) {
  transport::Sha256 digest;
  digest.update(bytes.data(), bytes.size() - 32);
  const auto sum = digest.finish();
  std::memcpy(bytes.data() + bytes.size() - 32, sum.data(), sum.size());
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void flip_byte(const std::string& path, off_t at) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  uint8_t b = 0;
  ASSERT_EQ(::pread(fd, &b, 1, at), 1);
  b ^= 0x40;
  ASSERT_EQ(::pwrite(fd, &b, 1, at), 1);
  ::close(fd);
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(Checkpoint, WhatIsWrittenIsReadBackWhole) {
  const std::string dir = temp_dir();
  ps::CheckpointHeader written = sample_header(3);
  written.earlier_job = 2;
  written.state_since = {5, 0};
  const std::string path = write_sample(dir, written, 1.0f);
  EXPECT_EQ(fs::path(path).filename(), "server-1-0000000003.ckpt");
  const ps::Checkpoint c = ps::read_checkpoint(path, 1 << 20);
  const ps::CheckpointHeader& h = c.header;
  EXPECT_EQ(h.index, 1u);
  EXPECT_EQ(h.servers, 2u);
  EXPECT_EQ(h.staleness, 3u);
  EXPECT_EQ(h.rule.difference(sample_header(3).rule), "");
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[1].name, "b");
  EXPECT_EQ(h.versions, (std::vector<uint64_t>{7, 8}));
  EXPECT_EQ(h.earlier_job, 2u);
  EXPECT_EQ(h.state_since, (std::vector<uint64_t>{5, 0}));
  ASSERT_EQ(h.workers.size(), 2u);
  EXPECT_EQ(h.workers[0].state, ps::WorkerState::kConnected);
  EXPECT_EQ(h.workers[1].clock, 4u);
  EXPECT_EQ(h.updates(), 14u);
  EXPECT_EQ(c.params, (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(c.state, (std::vector<float>{0.25f, 0.25f, 0.25f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f}));
  EXPECT_EQ(::access((path + ".tmp").c_str(), F_OK), -1) << "the temporary file outlived the rename";
  fs::remove_all(dir);
}

// Sample checkpoint `sequence` in `dir` as an older release wrote it: of
// `format`, without the last `fields` bytes of the current header before its
// floats (8) and state flag (1), which are 0 in the sample.
ps::Checkpoint as_older_format(const std::string& dir, uint64_t sequence, uint32_t format, size_t fields) {
  const std::string path = write_sample(dir, sequence, 1.0f);
  std::vector<char> bytes = bytes_of(path);
  const size_t header = ps::encode_checkpoint_header(sample_header(sequence), 8, true).size();
  const auto from = bytes.begin() + static_cast<std::ptrdiff_t>(header - 9 - fields);
  EXPECT_EQ(std::count(from, bytes.begin() + static_cast<std::ptrdiff_t>(header - 9), 0),
            static_cast<std::ptrdiff_t>(fields));
  bytes.erase(from, bytes.begin() + static_cast<std::ptrdiff_t>(header - 9));
  std::memcpy(bytes.data() + 8, &format, sizeof(format));
  rewrite_signed(path, bytes);
  return ps::read_checkpoint(path, 1 << 20);
}

// A checkpoint of format 1 (no earlier job's number, no state origins) is
// read, as what it says: neither.
TEST(Checkpoint, AFormatOneCheckpointReadsBack) {
  const std::string dir = temp_dir();
  // The header ends with earlier job (8), origins count (4), job (8): 0, 0 (none), 0 in the sample.
  const ps::Checkpoint c = as_older_format(dir, 3, 1, 20);
  EXPECT_EQ(c.header.sequence, 3u);
  EXPECT_EQ(c.header.earlier_job, 0u);
  EXPECT_TRUE(c.header.state_since.empty());
  EXPECT_EQ(c.header.workers[1].pushes, 3u);
  EXPECT_EQ(c.params, (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(c.state.back(), 0.5f);
  fs::remove_all(dir);
}

// Format 3 names the job its parameters are of; a file of format 2 (the
// release before) is read as of a job not known (0).
TEST(Checkpoint, TheJobReadsBackAndAFormatTwoCheckpointHasNone) {
  const std::string dir = temp_dir();
  ps::CheckpointHeader h = sample_header(3);
  h.job = 0x0123456789abcdefull;
  EXPECT_EQ(ps::read_checkpoint(write_sample(dir, h, 1.0f), 1 << 20).header.job, h.job);
  const ps::Checkpoint c = as_older_format(dir, 4, 2, 8);  // without the job
  EXPECT_EQ(c.header.job, 0u);
  EXPECT_EQ(c.header.sequence, 4u);
  EXPECT_EQ(c.params, (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}));
  fs::remove_all(dir);
}

// Fields a reader relies on are checked: an earlier job's number at or past
// the file's own would keep the file itself forever, and a state origin past
// its shard's version makes the bias correction's step count wrap.
TEST(Checkpoint, AnEarlierJobOrStateOriginPastTheFileIsRefused) {
  const std::string dir = temp_dir();
  ps::CheckpointHeader h = sample_header(3);
  h.earlier_job = 3;
  std::string what;
  const std::string past_job = write_sample(dir, h, 1.0f);
  EXPECT_EQ(error_code_of([&] { ps::read_checkpoint(past_job, 1 << 20); }, &what), Errc::kProtocol);
  EXPECT_NE(what.find("earlier job's checkpoints up to 3"), std::string::npos) << what;
  h = sample_header(4);
  h.state_since = {7, 9};  // versions {7, 8}
  const std::string past_version = write_sample(dir, h, 1.0f);
  EXPECT_EQ(error_code_of([&] { ps::read_checkpoint(past_version, 1 << 20); }, &what), Errc::kProtocol);
  EXPECT_NE(what.find("shard 1's state origin 9 past its version 8"), std::string::npos) << what;
  h.state_since = {7};
  const std::string short_origins = write_sample(dir, h, 1.0f);
  EXPECT_EQ(error_code_of([&] { ps::read_checkpoint(short_origins, 1 << 20); }, &what), Errc::kProtocol);
  EXPECT_NE(what.find("1 state origins"), std::string::npos) << what;
  fs::remove_all(dir);
}

TEST(Checkpoint, TornCorruptAndUnfinishedFilesAreSkippedNamingEach) {
  const std::string dir = temp_dir();
  const std::string good = write_sample(dir, 1, 1.0f);
  const std::string corrupt = write_sample(dir, 2, 2.0f);
  const std::string torn = write_sample(dir, 3, 3.0f);
  flip_byte(corrupt, static_cast<off_t>(fs::file_size(corrupt) / 2));
  fs::resize_file(torn, fs::file_size(torn) - 40);
  std::ofstream(dir + "/server-1-0000000004.ckpt.tmp") << "half";
  std::vector<std::string> said;
  auto c = ps::load_newest_checkpoint(dir, 1, 1 << 20, [&](const std::string& s) { said.push_back(s); });
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->path, good);
  EXPECT_EQ(c->params[0], 1.0f);
  ASSERT_EQ(said.size(), 3u);
  EXPECT_NE(said[0].find("0000000004.ckpt.tmp: an unfinished write"), std::string::npos) << said[0];
  EXPECT_NE(said[1].find(torn), std::string::npos) << said[1];
  EXPECT_NE(said[2].find(corrupt), std::string::npos) << said[2];
  EXPECT_NE(said[2].find("SHA-256"), std::string::npos) << said[2];
  // Another server's files are not this one's.
  EXPECT_FALSE(ps::load_newest_checkpoint(dir, 0, 1 << 20, [](const std::string&) {}).has_value());
  fs::remove_all(dir);
}

TEST(Checkpoint, PruningKeepsTheNewestAndRemovesUnfinishedWrites) {
  const std::string dir = temp_dir();
  for (uint64_t s = 1; s <= 4; ++s) write_sample(dir, s, 1.0f);
  std::ofstream(dir + "/server-1-0000000009.ckpt.tmp") << "half";
  std::ofstream(dir + "/server-0-0000000001.ckpt") << "another server's";
  ps::prune_checkpoints(dir, 1, 2, {1, 2, 3, 4});
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{"server-0-0000000001.ckpt", "server-1-0000000003.ckpt",
                                                     "server-1-0000000004.ckpt"}));
  fs::remove_all(dir);
}

// Files the server cannot vouch for never count toward --checkpoint-keep: a
// server resumed from #1 past a torn #7, a FIFO #8 and a directory #9 wrote
// #10, and pruning (keep 2) kept #10 and the directory and deleted #1, the
// only other intact checkpoint.
TEST(Checkpoint, PruningKeepsTheNewestIntactOnesWhateverLiesBetween) {
  const std::string dir = temp_dir();
  write_sample(dir, 1, 1.0f);
  std::ofstream(dir + "/server-1-0000000007.ckpt") << "torn";
  ASSERT_EQ(::mkfifo((dir + "/server-1-0000000008.ckpt").c_str(), 0600), 0);
  fs::create_directory(dir + "/server-1-0000000009.ckpt");
  write_sample(dir, 10, 10.0f);
  ps::prune_checkpoints(dir, 1, 2, {1, 10});
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{"server-1-0000000001.ckpt", "server-1-0000000007.ckpt",
                                                     "server-1-0000000008.ckpt", "server-1-0000000009.ckpt",
                                                     "server-1-0000000010.ckpt"}));
  write_sample(dir, 11, 11.0f);
  ps::prune_checkpoints(dir, 1, 2, {10, 11});
  // What lies below the two newest intact ones goes (a directory cannot be unlinked: it stays, harmless).
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{"server-1-0000000009.ckpt", "server-1-0000000010.ckpt",
                                                     "server-1-0000000011.ckpt"}));
  fs::remove_all(dir);
}

// Run without --resume beside an earlier job's checkpoints #1 to #3, a server
// writes #4 on; pruning to one keeps its newest and every file of the
// earlier job (they were deleted as it wrote its own: a restart that left out
// --resume lost the trained model).
TEST(Checkpoint, PruningNeverDeletesAnEarlierJobsCheckpoints) {
  const std::string dir = temp_dir();
  for (uint64_t s = 1; s <= 5; ++s) write_sample(dir, s, 1.0f);
  ps::prune_checkpoints(dir, 1, 1, {4, 5}, 3);
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{"server-1-0000000001.ckpt", "server-1-0000000002.ckpt",
                                                     "server-1-0000000003.ckpt", "server-1-0000000005.ckpt"}));
  fs::remove_all(dir);
}

// A server asked to resume whose every checkpoint is damaged refuses to start:
// it trained from nothing, exited 0, and its pruning deleted them later.
TEST(Checkpoint, ResumingWhereNoCheckpointReadsBackIsRefusedNamingThem) {
  const std::string dir = temp_dir();
  const std::string corrupt = write_sample(dir, 1, 1.0f);
  const std::string torn = write_sample(dir, 2, 2.0f);
  flip_byte(corrupt, static_cast<off_t>(fs::file_size(corrupt) / 2));
  fs::resize_file(torn, fs::file_size(torn) - 40);
  std::vector<std::string> said;
  std::string what;
  EXPECT_EQ(error_code_of(
                [&] { ps::load_newest_checkpoint(dir, 1, 1 << 20, [&](const std::string& s) { said.push_back(s); }); },
                &what),
            Errc::kInvalidArgument);
  EXPECT_NE(what.find("none of the 2 checkpoints of server 1 in " + dir + " reads back whole (the newest: '" + torn),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("restore one, or move them away to start empty"), std::string::npos) << what;
  EXPECT_EQ(said.size(), 2u);
  EXPECT_TRUE(fs::exists(corrupt) && fs::exists(torn));
  fs::remove_all(dir);
}

// A checkpoint restored by copying it over a newer name (the advice of a
// resume that found none intact) is numbered by its name: it kept the number
// inside it, the server numbered its own after that, and the restored file,
// counted as no checkpoint of this run, was pruned.
TEST(Checkpoint, ACheckpointCopiedToAnotherNameIsNumberedByItsName) {
  const std::string dir = temp_dir();
  const std::string first = write_sample(dir, 1, 1.0f);
  fs::copy_file(first, dir + "/server-1-0000000005.ckpt");
  const auto c = ps::load_newest_checkpoint(dir, 1, 1 << 20, [](const std::string&) {});
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->path, dir + "/server-1-0000000005.ckpt");
  EXPECT_EQ(c->header.sequence, 5u);
  fs::remove_all(dir);
}

// A checkpoint that could not be read (no permission here; an I/O error of a
// network file system, no memory) was skipped like a torn one: the server
// resumed from an older one, and its writes pruned the newer model later.
// Read by a process that is not root: root reads any file.
// extra: the directory, the unreadable newest file, the readable older one.
// Exit 3: this machine cannot make the case (no unprivileged user to become,
// a file system that ignores modes, a directory that user cannot reach).
RDMAPS_TEST_PEER(resume_unprivileged) {
  if (::getuid() == 0 && (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)) return 3;
  const int older = ::open(args.extra.at(2).c_str(), O_RDONLY | O_CLOEXEC);
  const int newest = ::open(args.extra.at(1).c_str(), O_RDONLY | O_CLOEXEC);
  if (older >= 0) ::close(older);
  if (newest >= 0) ::close(newest);
  if (older < 0 || newest >= 0) return 3;
  std::string what;
  const Errc code = error_code_of(
      [&] { ps::load_newest_checkpoint(args.extra.at(0), 1, 1 << 20, [](const std::string&) {}); }, &what);
  std::fprintf(stderr, "resume_unprivileged: %s: %s\n", errc_name(code), what.c_str());
  return code == Errc::kIo && what.find(args.extra.at(1)) != std::string::npos &&
                 what.find("resuming stops here rather than go back to an older checkpoint") != std::string::npos
             ? 0
             : 1;
}

TEST(Checkpoint, AFileThatCannotBeReadStopsTheResumeNamingIt) {
  const std::string dir = temp_dir();
  const std::string older = write_sample(dir, 1, 1.0f), newest = write_sample(dir, 2, 2.0f);
  ASSERT_EQ(::chmod(dir.c_str(), 0755) | ::chmod(older.c_str(), 0644) | ::chmod(newest.c_str(), 0), 0);
  PeerProcess reader("resume_unprivileged", transport::TransportKind::kTcp, 0, 1, {dir, newest, older});
  const int rc = reader.wait(30s);
  if (rc == 3) {
    fs::remove_all(dir);
    GTEST_SKIP() << "this machine cannot make a file unreadable to a reader of the directory (no user 65534 to "
                    "become, or modes ignored)";
  }
  EXPECT_EQ(rc, 0) << "the resume passed over the unreadable newest checkpoint";
  EXPECT_TRUE(fs::exists(newest));
  fs::remove_all(dir);
}

// A checkpoint of a newer release's format was skipped like a torn one: the
// server resumed from an older checkpoint, and once it had written
// --checkpoint-keep of its own, pruning deleted the newer model.
TEST(Checkpoint, ANewerFormatIsRefusedByAResumeAndNeverPruned) {
  const std::string dir = temp_dir();
  write_sample(dir, 1, 1.0f);
  // The same bytes under format version 4 (after the 8-byte magic): with its
  // SHA-256 made anew, a newer release's file; with the old one, damage.
  auto as_newer_format = [](const std::string& path, bool digest_too) {
    std::vector<char> bytes = bytes_of(path);
    const uint32_t format = 4;
    std::memcpy(bytes.data() + 8, &format, sizeof(format));
    if (digest_too) {
      rewrite_signed(path, bytes);
      return;
    }
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };
  const std::string damaged = write_sample(dir, 2, 2.0f);
  as_newer_format(damaged, false);
  std::vector<std::string> said;
  auto c = ps::load_newest_checkpoint(dir, 1, 1 << 20, [&](const std::string& s) { said.push_back(s); });
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->header.sequence, 1u) << "a damaged version field is skipped as damage";
  ASSERT_EQ(said.size(), 1u);
  EXPECT_NE(said[0].find("SHA-256"), std::string::npos) << said[0];

  const std::string newer = write_sample(dir, 3, 3.0f);
  as_newer_format(newer, true);
  std::string what;
  EXPECT_EQ(error_code_of([&] { ps::load_newest_checkpoint(dir, 1, 1 << 20, [](const std::string&) {}); }, &what),
            Errc::kInvalidArgument);
  EXPECT_NE(what.find("'" + newer + "' is a checkpoint of format version 4, written by a newer rdmaps"),
            std::string::npos)
      << what;
  write_sample(dir, 4, 4.0f);
  write_sample(dir, 5, 5.0f);
  ps::prune_checkpoints(dir, 1, 2, {4, 5});
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{"server-1-0000000003.ckpt", "server-1-0000000004.ckpt",
                                                     "server-1-0000000005.ckpt"}));
  fs::remove_all(dir);
}

// New checkpoints are numbered after every file of the server in the
// directory, readable or not: pruning keeps the highest numbers.
TEST(Checkpoint, TheNewestSequenceOnDiskCountsUnreadableFiles) {
  const std::string dir = temp_dir();
  EXPECT_EQ(ps::newest_checkpoint_sequence(dir, 1), 0u);
  write_sample(dir, 2, 1.0f);
  std::ofstream(dir + "/server-1-0000000007.ckpt") << "torn";
  std::ofstream(dir + "/server-2-0000000009.ckpt") << "another server's";
  EXPECT_EQ(ps::newest_checkpoint_sequence(dir, 1), 7u);
  fs::remove_all(dir);
}

// A FIFO by a checkpoint's name is skipped, not waited on for ever.
// A FIFO, a socket and a link to nothing by checkpoints' names (the last two
// failed their open as an I/O error, which stopped the resume).
TEST(Checkpoint, AFileThatIsNotRegularIsSkippedWithoutWaiting) {
  const std::string dir = temp_dir();
  const std::string good = write_sample(dir, 1, 1.0f);
  ASSERT_EQ(::mkfifo((dir + "/server-1-0000000002.ckpt").c_str(), 0600), 0);
  const std::string socket_path = dir + "/server-1-0000000003.ckpt";
  const int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(socket_path.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  ASSERT_EQ(::bind(sock, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
  ASSERT_EQ(::symlink((dir + "/gone").c_str(), (dir + "/server-1-0000000004.ckpt").c_str()), 0);
  std::vector<std::string> said;
  auto c = ps::load_newest_checkpoint(dir, 1, 1 << 20, [&](const std::string& s) { said.push_back(s); });
  ::close(sock);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->path, good);
  ASSERT_EQ(said.size(), 3u);
  EXPECT_NE(said[0].find("0000000004.ckpt' is gone, or a link to nothing"), std::string::npos) << said[0];
  EXPECT_NE(said[1].find("0000000003.ckpt' is not a regular file"), std::string::npos) << said[1];
  EXPECT_NE(said[2].find("0000000002.ckpt' is not a regular file"), std::string::npos) << said[2];
  fs::remove_all(dir);
}

// Two servers of one index writing one directory would overwrite each
// other's checkpoints: the second is refused, naming the first's pid.
TEST(Checkpoint, OneServerOfAnIndexWritesADirectory) {
  const std::string dir = temp_dir();
  std::string what;
  {
    ps::CheckpointDirLock first(dir, 0);
    // In this process (a Python rdmaps.Server still alive beside a new one) it named its own pid as another's.
    EXPECT_EQ(error_code_of([&] { ps::CheckpointDirLock second(dir, 0); }, &what), Errc::kInvalidArgument);
    EXPECT_NE(what.find("this process already runs a server 0 that writes checkpoints to '" + dir +
                        "' (--checkpoint-dir): destroy it first"),
              std::string::npos)
        << what;
    const pid_t child = ::fork();
    if (child == 0) {
      try {
        ps::CheckpointDirLock second(dir, 0);
      } catch (const Error& e) {
        const std::string said = e.what();
        char host[64] = {};
        ::gethostname(host, sizeof(host) - 1);
        _exit(said.find("another server 0 (pid " + std::to_string(::getppid()) + " on " + host +
                        ") writes checkpoints to '" + dir + "' (--checkpoint-dir)") == std::string::npos
                  ? 2
                  : 0);
      }
      _exit(1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "another process was not refused naming the holder";
    ps::CheckpointDirLock other_index(dir, 1);
  }
  ps::CheckpointDirLock again(dir, 0);  // released with the first
  fs::remove_all(dir);
}

// A forked child that outlives its server (a DataLoader worker) held the
// lock through its copy of the descriptor: the restarted server was refused,
// naming the dead one.
TEST(Checkpoint, AForkedChildHoldsNoLock) {
  const std::string dir = temp_dir();
  auto first = std::make_unique<ps::CheckpointDirLock>(dir, 0);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    ::close(ready[1]);  // forked: the parent reads its end's EOF
    ::pause();          // outlives the lock's owner until killed
    ::_exit(0);
  }
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 0);
  ::close(ready[0]);
  std::string what;
  EXPECT_EQ(error_code_of([&] { ps::CheckpointDirLock second(dir, 0); }, &what), Errc::kInvalidArgument)
      << "the parent's lock went at the fork";
  first.reset();
  try {
    ps::CheckpointDirLock again(dir, 0);
  } catch (const Error& e) {
    ADD_FAILURE() << "the forked child still holds the lock: " << e.what();
  }
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  fs::remove_all(dir);
}

// A directory deleted under a running server and made anew (by its next
// checkpoint) would hold no lock: a second server could take it. The lock
// is taken again before the write, and one taken meanwhile is named.
TEST(Checkpoint, ADirectoryDeletedUnderItsServerIsLockedAgain) {
  const std::string dir = temp_dir();
  std::string what;
  ps::CheckpointDirLock first(dir, 0);
  EXPECT_FALSE(first.retake_if_replaced());  // nothing changed
  fs::remove_all(dir);
  EXPECT_TRUE(first.retake_if_replaced());
  EXPECT_TRUE(fs::exists(dir + "/server-0.lock"));
  EXPECT_EQ(error_code_of([&] { ps::CheckpointDirLock second(dir, 0); }, &what), Errc::kInvalidArgument) << what;
  EXPECT_FALSE(first.retake_if_replaced());
  // Replaced, and another server holds the new one: named, not overwritten.
  fs::remove_all(dir);
  fs::create_directory(dir);
  {
    ps::CheckpointDirLock other(dir, 0);
    EXPECT_EQ(error_code_of([&] { first.retake_if_replaced(); }, &what), Errc::kInvalidArgument);
    EXPECT_NE(what.find("this process already runs a server 0 that writes checkpoints to '" + dir), std::string::npos)
        << what;
  }
  EXPECT_TRUE(first.retake_if_replaced());  // the other went: it is this one's again
  fs::remove_all(dir);
}

TEST(Checkpoint, AFileTooLargeForTheServerIsRefusedBeforeReading) {
  const std::string dir = temp_dir();
  const std::string path = write_sample(dir, 1, 1.0f);
  fs::resize_file(path, uint64_t{1} << 30);  // sparse: claims 1 GiB, reading it would take that much memory
  std::string what;
  EXPECT_EQ(error_code_of([&] { ps::read_checkpoint(path, 1 << 20); }, &what), Errc::kInvalidArgument);
  EXPECT_NE(what.find("--max-bytes"), std::string::npos) << what;
  EXPECT_NE(what.find(path), std::string::npos) << what;
  fs::remove_all(dir);
}

// A shard per float (--shard-floats 1) makes the version words twice the
// table: a checkpoint a server wrote for a table its --max-bytes accepts was
// refused as "more than a table this server accepts could need".
TEST(Checkpoint, ACheckpointOfOneFloatPerShardReadsBack) {
  // 20 s of a sanitizer stream for a size limit; the small checkpoints run the same code under it.
  if (kUnderSanitizer) GTEST_SKIP() << "a 144 MiB checkpoint: the plain build checks the limit";
  const std::string dir = temp_dir();
  constexpr size_t kFloats = 9u << 20;  // 144 MiB with state and versions: above 2 x the table + 64 MiB
  ps::CheckpointHeader h = sample_header(1);
  h.index = 0;
  h.servers = 1;
  h.shard_floats = 1;
  h.tensors = {{"w", kFloats}};
  h.versions.assign(kFloats, 3);
  h.state_since.assign(kFloats, 1);  // the most a file holds per float: 24 bytes
  std::vector<float> params(kFloats, 0.5f), state(kFloats, 0.25f);
  ps::FloatRuns runs;
  runs.params = {params};
  runs.state = {state};
  const std::string path = ps::write_checkpoint(dir, h, runs);
  const ps::Checkpoint c = ps::read_checkpoint(path, kFloats * sizeof(float));
  EXPECT_EQ(c.params.size(), kFloats);
  EXPECT_EQ(c.header.versions.size(), kFloats);
  EXPECT_EQ(c.state.back(), 0.25f);
  fs::remove_all(dir);
}

TEST(Checkpoint, AServerWhoseCheckpointDirectoryCannotBeWrittenRefusesToStart) {
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.config.checkpoint_dir = "/proc/rdmaps-no-such-place/ckpt";
  std::string what;
  EXPECT_EQ(error_code_of([&] { Server server(o); }, &what), Errc::kInvalidArgument);
  EXPECT_NE(what.find("/proc/rdmaps-no-such-place/ckpt"), std::string::npos) << what;
  EXPECT_NE(what.find("--checkpoint-dir"), std::string::npos) << what;
  // A file where the directory should be: named as the flag's value, not by a probe file inside it.
  const std::string dir = temp_dir();
  o.config.checkpoint_dir = dir + "/a-file";
  std::ofstream(o.config.checkpoint_dir) << "x";
  EXPECT_EQ(error_code_of([&] { Server server(o); }, &what), Errc::kInvalidArgument);
  EXPECT_NE(what.find("cannot write files in the checkpoint directory (--checkpoint-dir) '" + o.config.checkpoint_dir +
                      "': Not a directory"),
            std::string::npos)
      << what;
  fs::remove_all(dir);
}

// A checkpoint the server could not serve from is refused at start, naming
// the file and why: a bound other than the one the server is given (its
// workers would all be refused), a table it cannot lay out (a crafted header;
// it said only "raise --shard-floats"), arrays of the wrong size (which ones),
// a table over --max-bytes.
// A directory others may write in: refused (they could plant checkpoints, or
// links where the server writes: a link by the probe's or the lock's name
// made the server overwrite its target). A link planted in one's own
// directory is not followed.
TEST(Checkpoint, ADirectoryOthersMayWriteInOrLinksInItAreRefused) {
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  const std::string dir = temp_dir(), victim = dir + "/victim";
  std::ofstream(victim) << "keep";
  o.config.checkpoint_dir = dir + "/ckpt";
  fs::create_directory(o.config.checkpoint_dir);
  ASSERT_EQ(::chmod(o.config.checkpoint_dir.c_str(), 0777), 0);
  std::string what;
  EXPECT_EQ(error_code_of([&] { Server server(o); }, &what), Errc::kInvalidArgument);
  EXPECT_NE(what.find("'" + o.config.checkpoint_dir + "' (--checkpoint-dir) has mode 0777: any user may write in it"),
            std::string::npos)
      << what;
  ASSERT_EQ(::chmod(o.config.checkpoint_dir.c_str(), 0700), 0);
  for (const char* name : {".rdmaps-write-test", "server-0.lock"}) {
    const std::string link = o.config.checkpoint_dir + "/" + name;
    fs::create_symlink(victim, link);
    EXPECT_THROW(Server server(o), Error) << name;
    std::ifstream in(victim);
    std::string kept;
    std::getline(in, kept);
    EXPECT_EQ(kept, "keep") << "the server wrote through the link " << name;
    fs::remove(link);
  }
  if (::geteuid() == 0) {  // only root can give a directory away
    ASSERT_EQ(::chown(o.config.checkpoint_dir.c_str(), 65534, 65534), 0);
    EXPECT_EQ(error_code_of([&] { Server server(o); }, &what), Errc::kInvalidArgument);
    EXPECT_NE(what.find("belongs to uid 65534, not to this user"), std::string::npos) << what;
  }
  fs::remove_all(dir);
}

TEST(Checkpoint, AResumeThatCouldNotServeNamesTheFileAndWhy) {
  const std::string dir = temp_dir();
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.index = 1;
  o.servers = 2;
  o.workers = 2;
  o.config.shard_floats = 4;
  o.config.checkpoint_dir = dir;
  o.config.resume = true;
  o.log_connections = false;
  const std::string path = write_sample(dir, 1, 1.0f);  // written with staleness 3
  { Server resumed(o); }                                // no bound given: the checkpoint's holds
  std::string what;
  Config given = o.config;
  parse_config(given, {"--staleness", "0"}, nullptr);
  ServerOptions bound = o;
  bound.config = given;
  EXPECT_EQ(error_code_of([&] { Server s(bound); }, &what), Errc::kInvalidArgument);
  EXPECT_NE(what.find("cannot resume from '" + path +
                      "': it was written with staleness bound 3, this server is given 0 (--staleness"),
            std::string::npos)
      << what;
  fs::remove(path);
  std::vector<float> seven(7, 1.0f);
  ps::FloatRuns runs;
  runs.params = {seven};
  const std::string short_one = ps::write_checkpoint(dir, sample_header(2), runs);
  EXPECT_EQ(error_code_of([&] { Server s(o); }, &what), Errc::kInvalidArgument);
  EXPECT_NE(
      what.find("cannot resume from '" + short_one + "': it holds 7 parameters where the table it declares needs 8"),
      std::string::npos)
      << what;
  ps::CheckpointHeader crafted = sample_header(3);
  crafted.tensors = {{"a", uint64_t{1} << 39}};
  const std::string huge = ps::write_checkpoint(dir, crafted, runs);
  EXPECT_EQ(error_code_of([&] { Server s(o); }, &what), Errc::kInvalidArgument);
  EXPECT_NE(what.find("cannot resume from '" + huge + "': its table cannot be laid out: "), std::string::npos) << what;
  // A table over --max-bytes, which a first worker could not have declared.
  fs::remove(short_one);
  fs::remove(huge);
  const std::vector<float> eight(8, 1.0f);  // FloatRuns only points at it
  runs.params = {eight};
  const std::string big = ps::write_checkpoint(dir, sample_header(4), runs);
  ServerOptions capped = o;
  capped.max_bytes = 20;
  EXPECT_EQ(error_code_of([&] { Server s(capped); }, &what), Errc::kInvalidArgument);
  EXPECT_NE(what.find("cannot resume from '" + big +
                      "': this server's share of its declared table of 16 floats, 8 floats (32 bytes), is over "
                      "this server's limit of 20 bytes (--max-bytes)"),
            std::string::npos)
      << what;
  fs::remove_all(dir);
}

// ---- a server process restarted from its checkpoints --------------------------

constexpr size_t kFloats = 1000;
constexpr uint32_t kShard = 256;  // four shards, two lanes
constexpr float kLr = 0.125f;

Config restart_config(transport::TransportKind kind, const std::string& dir) {
  Config c = sgd_config(kind, kLr, kShard);
  c.staleness = 0;  // the clock waits too: it must survive the restarts
  c.server_threads = 2;
  c.checkpoint_dir = dir;
  c.checkpoint_every_updates = 6;
  c.checkpoint_every_ms = 0;
  c.secret = test_secret();
  return c;
}

// extra: checkpoint directory, "resume" or "fresh".
RDMAPS_TEST_PEER(checkpoint_server) {
  ServerOptions o;
  o.listen = "127.0.0.1:" + std::to_string(args.port);
  o.workers = 1;
  o.config = restart_config(args.transport, args.extra.at(0));
  o.config.resume = args.extra.at(1) == "resume";
  o.log_connections = false;
  Server server(o);
  server.run();
  return 0;
}

std::vector<float> gradient(int step) {
  std::vector<float> g(kFloats);
  for (size_t i = 0; i < kFloats; ++i) g[i] = 0.5f + 0.001f * static_cast<float>((step * 7 + i) % 97);
  return g;
}

// SGD in shards of 16 floats, a checkpoint after every update into `dir`.
Config checkpoint_each_update(transport::TransportKind kind, const std::string& dir) {
  Config c = sgd_config(kind, kLr, 16);
  c.checkpoint_dir = dir;
  c.checkpoint_every_updates = 1;
  c.checkpoint_every_ms = 0;
  return c;
}

// Servers that stay up when their workers leave, and log no connections.
ServerOptions kept_running() {
  ServerOptions o;
  o.exit_when_done = false;
  o.log_connections = false;
  return o;
}

// The lines of a LogWatch's text.
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// A job of `servers` servers and one worker that pushes one step of 64 ones
// and leaves, its servers stopped (each wrote its final checkpoint).
void one_step_then_stop(uint32_t servers_count, const Config& c) {
  ServerGroup servers(servers_count, 1, c, kept_running());
  {
    Client client(local_worker_options(servers.addresses(), c));
    client.declare("w", 64);
    client.connect();
    client.push("w", std::vector<float>(64, 1.0f));
    client.clock();
  }
  servers.stop();
}

class PsCheckpointTest : public PsTest {};

// A one-worker SGD job whose server is killed twice and restarted with
// --resume. After each restart every shard must hold exactly the parameters
// after some number k of the worker's pushes (the shards of one lane at most
// one push apart: a lane's snapshot is of one moment), the k's must add up to what the
// worker was told the checkpoint holds, and the job goes on from there. A
// server that comes back without its checkpoint is refused by the worker.
TEST_P(PsCheckpointTest, AServerRestartedFromItsCheckpointTakesItsWorkerBackWithExactlyWhatItHeld) {
  const std::string dir = temp_dir();
  int port = 0;
  auto server =
      std::make_unique<PeerProcess>(listening_peer("checkpoint_server", GetParam(), 1, {dir, "fresh"}, &port));
  ClientOptions o;
  o.servers = {"127.0.0.1:" + std::to_string(port)};
  o.workers = 1;
  o.config = restart_config(GetParam(), dir);
  o.config.reconnect_ms = 20000;
  o.timeout = 30s;
  std::unique_ptr<Client> client = connect_when_up(o, "w", kFloats);
  ASSERT_TRUE(client) << "the server process did not come up";
  // What the server holds if nothing is lost, and every state since the last restart.
  std::vector<float> current(kFloats, 1.0f);
  std::vector<std::vector<float>> history{current};
  std::vector<uint64_t> base(4, 0);  // pushes each shard held after the last restart
  client->init("w", current);
  int step = 0;
  auto train = [&](int steps) {
    for (int i = 0; i < steps; ++i, ++step) {
      const auto g = gradient(step);
      client->push("w", g);
      client->clock();
      for (size_t j = 0; j < kFloats; ++j) current[j] = current[j] - kLr * g[j];
      history.push_back(current);
    }
  };
  // The newest checkpoint's sequence in `dir` (0: none yet).
  auto newest = [&] {
    uint64_t n = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename();
      if (name.ends_with(".ckpt")) n = std::max<uint64_t>(n, std::stoull(name.substr(name.rfind('-') + 1)));
    }
    return n;
  };
  uint64_t seen = 0;
  auto restart = [&](const char* mode) {
    // At least one checkpoint since the last restart (they are written beside the serving).
    for (auto until = Clock::now() + 20s; newest() <= seen && Clock::now() < until;) std::this_thread::sleep_for(5ms);
    ASSERT_GT(newest(), seen) << "the server wrote no checkpoint";
    seen = newest();
    server->kill_now();
    server = std::make_unique<PeerProcess>("checkpoint_server", GetParam(), port, 2 + step,
                                           std::vector<std::string>{dir, mode});
  };
  for (int round = 1; round <= 2; ++round) {
    train(10);
    restart("resume");
    std::vector<float> w(kFloats);
    client->pull("w", w);  // reconnects
    const ClientStats s = client->stats();
    ASSERT_EQ(s.reconnects, static_cast<uint64_t>(round));
    // Which state each shard is in, exactly.
    uint64_t held = 0;
    std::vector<size_t> at;
    for (size_t shard = 0; shard < 4; ++shard) {
      const size_t begin = shard * kShard, end = std::min(kFloats, begin + kShard);
      size_t c = history.size();
      for (size_t k = 0; k < history.size() && c == history.size(); ++k)
        if (std::memcmp(w.data() + begin, history[k].data() + begin, (end - begin) * 4) == 0) c = k;
      ASSERT_LT(c, history.size()) << "round " << round << ": shard " << shard
                                   << " holds parameters the worker never had";
      at.push_back(c);
      base[shard] += c;
      held += base[shard];
    }
    // A lane's snapshot is of one moment, which may fall between the pieces of one push.
    EXPECT_LE(std::max(at[0], at[1]) - std::min(at[0], at[1]), 1u) << "lane 0's shards are of different moments";
    EXPECT_LE(std::max(at[2], at[3]) - std::min(at[2], at[3]), 1u) << "lane 1's shards are of different moments";
    EXPECT_EQ(s.pushes, 4 * static_cast<uint64_t>(step)) << "pushes (messages) counted";
    EXPECT_EQ(held, 4 * static_cast<uint64_t>(step) - s.pushes_lost)
        << "the shards hold " << held << " pieces; the worker sent " << 4 * step << " and was told " << s.pushes_lost
        << " were lost";
    EXPECT_GT(held, 0u) << "nothing kept";
    std::printf("[ info     ] restart %d: %llu of %d pieces kept, %llu lost in all\n", round,
                static_cast<unsigned long long>(held), 4 * step, static_cast<unsigned long long>(s.pushes_lost));
    current = w;  // the job goes on from what was kept
    history = {current};
  }
  train(5);
  std::vector<float> w(kFloats);
  client->pull("w", w);
  EXPECT_EQ(std::memcmp(w.data(), current.data(), kFloats * 4), 0) << "training after the restarts drifted";
  // Back without its checkpoint: the worker stops rather than train from nothing.
  restart("fresh");
  std::string what;
  EXPECT_EQ(error_code_of([&] { client->pull("w", w); }, &what), Errc::kPeerGone) << what;
  EXPECT_NE(what.find("resumed no checkpoint of it"), std::string::npos) << what;
  // And so does every later call: it found the fresh server's zeros.
  EXPECT_EQ(error_code_of([&] { client->pull("w", w); }, &what), Errc::kPeerGone) << what;
  EXPECT_NE(what.find("pull: this client cannot go on"), std::string::npos) << what;
  EXPECT_NE(what.find("resumed no checkpoint of it"), std::string::npos) << what;
  EXPECT_EQ(error_code_of([&] { client->push("w", w); }, &what), Errc::kPeerGone) << what;
  client.reset();
  server->kill_now();
  fs::remove_all(dir);
}

// Aborts every established TCP connection of this process (`ss -K`, both
// ends, with a reset): the network dropping them. Returns how many it aborted.
int abort_tcp_connections() {
  const std::string me = "pid=" + std::to_string(::getpid()) + ",";
  std::unique_ptr<FILE, int (*)(FILE*)> list(::popen("ss -Htnp state established 2>/dev/null", "r"), ::pclose);
  if (!list) return 0;
  std::vector<std::string> ends;
  char line[1024];
  while (std::fgets(line, sizeof(line), list.get()))
    if (std::strstr(line, me.c_str())) {
      std::istringstream in(line);
      std::string recv_q, send_q, local, peer;
      in >> recv_q >> send_q >> local >> peer;
      ends.push_back(local + " " + peer);
    }
  int aborted = 0;
  for (const std::string& e : ends) {
    std::istringstream in(e);
    std::string local, peer;
    in >> local >> peer;
    const auto colon = local.rfind(':'), peer_colon = peer.rfind(':');
    const std::string command = "ss -K src " + local.substr(0, colon) + " sport = :" + local.substr(colon + 1) +
                                " dst " + peer.substr(0, peer_colon) + " dport = :" + peer.substr(peer_colon + 1) +
                                " >/dev/null 2>&1";
    if (std::system(command.c_str()) == 0) ++aborted;
  }
  return aborted;
}

// One server of `c` (logging no connections) and one worker that reconnects
// for up to 20 s, connected, "w" set to ones.
struct ReconnectingJob {
  explicit ReconnectingJob(const Config& c) : servers(1, 1, c, quiet()), client(worker(servers, c)) {
    client.declare("w", kFloats);
    client.connect();
    client.init("w", std::vector<float>(kFloats, 1.0f));
  }
  static ServerOptions quiet() {
    ServerOptions o;
    o.log_connections = false;
    return o;
  }
  static ClientOptions worker(const ServerGroup& servers, const Config& c) {
    ClientOptions o = local_worker_options(servers.addresses(), c);
    o.config.reconnect_ms = 20000;
    o.timeout = 30s;
    return o;
  }
  ServerGroup servers;
  Client client;
};

// The network drops every connection between a worker and its server (both
// alive) just before a push: the worker reconnects to the same server process
// and goes on. That push, sent into the dead connection before the worker
// noticed, may be lost; every shard must hold exactly the parameters with or
// without it, and the shards without it must be as many as the pieces the
// worker was told were lost. The server counts the old connection as lost,
// and, exiting when its job is done as rdmaps-server does, waits for the
// worker's reconnect window instead of taking its only worker's death for
// the job's end (it exited, and the worker found nobody to reconnect to).
// With `refused_step` >= 0, that step's gradient holds a NaN in shard 0,
// which the server refuses (check_nan): taken in, not lost to the reconnect.
void reconnect_to_the_same_server(transport::TransportKind kind, int refused_step) {
  Config c = sgd_config(kind, kLr, kShard);
  c.staleness = 0;
  c.server_threads = 2;
  c.check_nan = refused_step >= 0;
  ReconnectingJob job(c);
  auto& [servers, client] = job;
  std::vector<float> current(kFloats, 1.0f), without(kFloats, 1.0f), w(kFloats);  // without: step 10 lost
  for (int step = 0; step < 20; ++step) {
    if (step == 10) {
      ASSERT_GT(abort_tcp_connections(), 0) << "no connection of this process to abort";
    }
    auto g = gradient(step);
    const size_t first_applied = step == refused_step ? kShard : 0;  // shard 0's piece is refused
    if (step == refused_step) g[0] = std::numeric_limits<float>::quiet_NaN();
    client.push("w", g);
    client.clock();
    for (size_t j = first_applied; j < kFloats; ++j) current[j] = current[j] - kLr * g[j];
    if (step != 10)
      for (size_t j = first_applied; j < kFloats; ++j) without[j] = without[j] - kLr * g[j];
  }
  client.pull("w", w);
  const ClientStats s = client.stats();
  EXPECT_EQ(s.reconnects, 1u);
  uint64_t missing = 0;
  for (size_t shard = 0; shard < 4; ++shard) {
    const size_t begin = shard * kShard, n = std::min(kFloats, begin + kShard) - begin;
    const bool whole = std::memcmp(w.data() + begin, current.data() + begin, n * 4) == 0;
    const bool short_one = std::memcmp(w.data() + begin, without.data() + begin, n * 4) == 0;
    EXPECT_TRUE(whole || short_one) << "shard " << shard << ": a push was lost unreported or applied twice";
    missing += short_one && !whole;
  }
  EXPECT_EQ(missing, s.pushes_lost) << "pieces missing from the parameters vs pieces reported lost";
  std::printf("[ info     ] connections aborted before step 10's push: %llu of its 4 pieces lost (reported)\n",
              static_cast<unsigned long long>(missing));
  EXPECT_EQ(servers.server(0).stats().workers_lost, 1u);
  if (refused_step >= 0) {
    EXPECT_EQ(servers.server(0).stats().rejected, 1u);
  }
}

TEST_P(PsCheckpointTest, AWorkerWhoseConnectionsDropReconnectsToTheSameServerLosingOnlyWhatWasInFlight) {
  if (std::system("ss -V >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs ss (iproute2) to abort connections";
  reconnect_to_the_same_server(GetParam(), -1);
}

// Under SSP with skip_pulls, the re-pull of a reconnect (it sets the server's
// DC backups of this worker) was taken for a pull the worker computes on: the
// worker then served its pulls from it for up to s clocks more, but pushed
// with its older copy's versions, and the server saw a staleness beyond the
// bound. Its next pull fetches now, and the versions its pushes name are the
// ones they were computed on.
TEST_P(PsCheckpointTest, AReconnectsRePullLeavesNoPushStalerThanTheBound) {
  if (std::system("ss -V >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs ss (iproute2) to abort connections";
  constexpr uint64_t kBound = 3;
  Config c = sgd_config(GetParam(), kLr, kShard);
  c.staleness = kBound;
  c.skip_pulls = true;
  c.server_threads = 2;
  ReconnectingJob job(c);
  auto& [servers, client] = job;
  std::vector<float> w(kFloats, 1.0f);
  for (int step = 0; step < 20; ++step) {
    if (step == 10) {
      ASSERT_GT(abort_tcp_connections(), 0) << "no connection of this process to abort";
    }
    client.pull("w", w);
    client.push("w", gradient(step));
    client.clock();
  }
  EXPECT_EQ(client.stats().reconnects, 1u);
  EXPECT_GT(client.stats().pulls_skipped, 0u) << "no pull was skipped: the bound was not exercised";
  EXPECT_LE(servers.server(0).stats().staleness_max, kBound) << "a push named an older copy than it was computed on";
}

// A worker whose connections dropped (it reconnected to the same server
// process) and whose server then restarted from a checkpoint older than the
// drop: the pushes it had sent before the drop, which that checkpoint lacks,
// were not counted lost (the reconnect raised the baseline of a predecessor's
// pushes above them). Sent - lost = held, whatever came between.
TEST_P(PsCheckpointTest, PushesLostCountThoughAConnectionDroppedBeforeTheRestart) {
  if (std::system("ss -V >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs ss (iproute2) to abort connections";
  const std::string dir = temp_dir();
  Config c = sgd_config(GetParam(), kLr, kShard);
  c.staleness = 0;
  c.server_threads = 2;
  c.checkpoint_dir = dir;
  c.checkpoint_every_updates = 4;  // one a push (four shards)
  c.checkpoint_keep = 1000;
  ReconnectingJob job(c);
  auto& [servers, client] = job;
  std::vector<float> w(kFloats, 1.0f);
  auto steps = [&](int from, int to) {
    for (int step = from; step < to; ++step) {
      client.push("w", gradient(step));
      client.clock();
    }
  };
  auto checkpoints = [&] {
    std::vector<std::string> names = names_in(dir);
    std::erase_if(names, [](const std::string& n) { return !n.ends_with(".ckpt"); });
    return names;
  };
  // Steps until two checkpoints are written (requests that come while one is
  // written make one more): the older lacks pushes sent before the drop.
  int next = 0;
  for (auto until = Clock::now() + 20s; checkpoints().size() < 2 && Clock::now() < until; ++next) {
    steps(next, next + 1);
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_GE(checkpoints().size(), 2u) << "no two checkpoints written";
  const std::string oldest = checkpoints().front();  // holds fewer pushes than were sent
  ASSERT_GT(abort_tcp_connections(), 0) << "no connection of this process to abort";
  steps(next, next + 6);
  ASSERT_EQ(client.stats().reconnects, 1u) << "the dropped connections were not reconnected";
  Config resume = c;
  resume.resume = true;
  servers.restart(0, resume, [&] {
    for (const std::string& name : checkpoints())
      if (name != oldest) fs::remove(fs::path(dir) / name);
  });
  steps(next + 6, next + 10);
  client.pull("w", w);
  const ClientStats s = client.stats();
  const ServerStats held = servers.server(0).stats();
  EXPECT_EQ(s.reconnects, 2u);
  EXPECT_GT(held.resumed_updates, 0u) << "the restart resumed nothing";
  EXPECT_EQ(s.pushes - s.pushes_lost, held.resumed_updates + held.applied_per_worker.at(0))
      << s.pushes << " pushes sent, " << s.pushes_lost << " reported lost; the server holds " << held.resumed_updates
      << " from its checkpoint and " << held.applied_per_worker.at(0) << " applied since";
  servers.stop();
  fs::remove_all(dir);
}

// The server said it held only the pushes it applied: one it refused (or
// dropped above tau_max) before the reconnect was reported lost by it.
TEST_P(PsCheckpointTest, APushTheServerRefusedBeforeAReconnectIsNotReportedLost) {
  if (std::system("ss -V >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs ss (iproute2) to abort connections";
  reconnect_to_the_same_server(GetParam(), 4);
}

// SGD over tcp in shards of 256 KiB (rendezvous: a send stays under way until
// its receiver fetches it), a checkpoint after every update, one lane.
constexpr uint32_t kBigShard = 65536;
Config big_shard_config(const std::string& dir) {
  Config c = sgd_config(transport::TransportKind::kTcp, kLr, kBigShard);
  c.checkpoint_dir = dir;
  c.checkpoint_every_updates = 1;
  c.checkpoint_every_ms = 0;
  c.staleness = kInfiniteStaleness;
  c.server_threads = 1;  // a push's pieces go in shard order
  c.secret = test_secret();
  return c;
}

// extra: checkpoint directory, "resume" or "fresh".
RDMAPS_TEST_PEER(resumable_big_shard_server) {
  ServerOptions o = kept_running();
  o.listen = "127.0.0.1:" + std::to_string(args.port);
  o.workers = 1;
  o.config = big_shard_config(args.extra.at(0));
  o.config.resume = args.extra.at(1) == "resume";
  Server server(o);
  server.run();
  return 0;
}

// A server process of big shards and its one worker (reconnecting for up to
// 20 s) over tcp; the server can be stopped, then killed and resumed from its
// checkpoint while the worker waits on it.
class CheckpointReconnect : public testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<PeerProcess>(
        listening_peer("resumable_big_shard_server", transport::TransportKind::kTcp, 1, {dir_, "fresh"}, &port_));
  }
  void TearDown() override {
    if (restarter_.joinable()) restarter_.join();
    client_.reset();
    server_->kill_now();
    fs::remove_all(dir_);
  }
  /// The worker, once it connected with `tensors` (name, floats) declared.
  Client* connect(const std::vector<std::pair<std::string, size_t>>& tensors) {
    ClientOptions o;
    o.servers = {"127.0.0.1:" + std::to_string(port_)};
    o.config = big_shard_config(dir_);
    o.config.reconnect_ms = 20000;
    o.timeout = 30s;
    for (auto until = Clock::now() + 20s; !client_ && Clock::now() < until;) {
      try {
        client_ = std::make_unique<Client>(o);
        for (const auto& [name, floats] : tensors) client_->declare(name, floats);
        client_->connect();
      } catch (const Error&) {
        client_.reset();
        std::this_thread::sleep_for(50ms);
      }
    }
    return client_.get();
  }
  /// Waits for a checkpoint holding `updates` updates.
  bool checkpointed(uint64_t updates) {
    for (auto until = Clock::now() + 20s; Clock::now() < until; std::this_thread::sleep_for(5ms)) {
      try {
        const auto k = ps::load_newest_checkpoint(dir_, 0, 1 << 30, [](const std::string&) {});
        if (k && k->header.updates() >= updates) return true;
      } catch (const Error&) {
        // written meanwhile
      }
    }
    return false;
  }
  /// Stops the server now; 0.5 s later kills it and starts it again resuming.
  void stop_then_restart() {
    // Stopped before the call under test begins: on a loaded machine its
    // lane ran on for a moment and took in a whole init (clean-clone run).
    ASSERT_TRUE(stop_process(server_->pid())) << "the server did not stop";
    restarter_ = std::thread([this] {
      std::this_thread::sleep_for(500ms);  // the call under test waits on the stopped server by then
      server_->kill_now();
      server_ = std::make_unique<PeerProcess>("resumable_big_shard_server", transport::TransportKind::kTcp, port_, 2,
                                              std::vector<std::string>{dir_, "resume"});
    });
  }
  void restarted() { restarter_.join(); }

  const std::string dir_ = temp_dir();
  int port_ = 0;
  std::unique_ptr<PeerProcess> server_;
  std::unique_ptr<Client> client_;
  std::thread restarter_;
};

// A push whose whole-shard pieces are under way to a stopped server, and one
// of whose small pieces flushes a gathered run to it: the server is killed
// and restarted meanwhile, the run's failure reconnects it, and the reconnect
// closed the endpoints the push's pieces were still under way on (their wait
// then read freed memory: the sanitizer build shows it). They are waited for,
// or given up with the old connection, before it closes now; the push
// returns and the job goes on against the resumed server.
TEST_F(CheckpointReconnect, APushWhoseGatheredRunReconnectsItsServerLeavesNoSendOnTheOldEndpoints) {
  // big: shards 0 and 1 whole, the start of shard 2; then a gap; c inside shard 2.
  // c's run is large enough to go by rendezvous too: its flush waits on the stopped server.
  const size_t big = 2 * kBigShard + 100, gap = 100, small = 40000, tail = kBigShard - 40200;
  Client* client = connect({{"big", big}, {"gap", gap}, {"c", small}, {"tail", tail}});
  ASSERT_TRUE(client) << "the server process did not come up";
  client->push("big", std::vector<float>(big, 0.5f));
  client->clock();
  std::vector<float> w(big);
  client->pull("big", w);
  // Shards 0 and 1, then the gathered piece of shard 2 at the clock.
  ASSERT_TRUE(checkpointed(3)) << "the server wrote no checkpoint of its three updates";
  client->push("c", std::vector<float>(small, 0.25f));  // gathered, not sent
  stop_then_restart();
  // Shards 0 and 1 posted to the stopped server, then big's piece of shard 2
  // flushes c's run, which does not adjoin it: that flush reconnects.
  EXPECT_NO_THROW(client->push("big", std::vector<float>(big, 0.5f)));
  restarted();
  EXPECT_NO_THROW(client->clock());
  EXPECT_NO_THROW(client->pull("big", w));
  EXPECT_EQ(client->stats().reconnects, 1u);
  // Every float is what one or two of big's pushes made it.
  for (size_t i = 0; i < big; i += 4096)
    EXPECT_TRUE(w[i] == -kLr * 0.5f || w[i] == -2 * kLr * 0.5f) << "float " << i << " is " << w[i];
}

// An init during which its server restarts (more pieces than the inbox has
// credits: the fifth on waits on the stopped server): the pieces not yet sent
// were skipped, and those sent before may be missing from the checkpoint,
// yet init() returned. An init sets values, so the server that came back
// gets every piece again, and every float holds the init's value.
TEST_F(CheckpointReconnect, AnInitDuringWhichItsServerRestartsSetsEveryValue) {
  constexpr size_t kShards = 16;  // four times the inbox's credits: most of the init waits on the stopped server
  const size_t floats = kShards * kBigShard;
  Client* client = connect({{"w", floats}});
  ASSERT_TRUE(client) << "the server process did not come up";
  client->push("w", std::vector<float>(floats, 0.5f));
  client->clock();
  std::vector<float> w(floats);
  client->pull("w", w);
  ASSERT_TRUE(checkpointed(kShards)) << "the server wrote no checkpoint of its updates";
  stop_then_restart();
  EXPECT_NO_THROW(client->init("w", std::vector<float>(floats, 3.0f)));
  restarted();
  EXPECT_NO_THROW(client->pull("w", w));
  EXPECT_EQ(client->stats().reconnects, 1u);
  for (size_t shard = 0; shard < kShards; ++shard)
    EXPECT_EQ(w[shard * kBigShard + 7], 3.0f) << "shard " << shard << " kept what the checkpoint held";
}

// The checkpoint a stopping server writes last holds every update it
// applied, even when a periodic snapshot was half taken as it stopped: that
// snapshot stands for the moment it was asked for, and was once finished and
// published as the final one, losing the pushes since. A small tensor is
// pushed beside a table of a million 16-float shards, which a lane copies
// one per turn of its loop: a checkpoint after every update keeps a
// snapshot in progress nearly all the time, and the server is stopped a few
// pushes after a checkpoint was written, when the next one has just begun.
TEST_P(PsCheckpointTest, TheFinalCheckpointHoldsEveryUpdateThoughASnapshotWasInProgress) {
  const std::string dir = temp_dir();
  Config c = checkpoint_each_update(GetParam(), dir);
  c.staleness = kInfiniteStaleness;
  c.server_threads = 1;
  const ServerOptions base = kept_running();
  constexpr size_t kSmall = 16, kBig = size_t{16} << 20;
  std::vector<float> before(kSmall), after(kSmall);
  uint64_t pushes = 0;
  {
    ServerGroup servers(1, 1, c, base);
    Client client(local_worker_options(servers.addresses(), c));
    client.declare("small", kSmall);
    client.declare("big", kBig);
    client.connect();
    const std::vector<float> g(kSmall, 0.5f);
    auto step = [&] {
      client.push("small", g);
      client.clock();
    };
    // The first checkpoint, taken while the lane has nothing else to do
    // (under a stream of pushes it copies a shard per push: 16 s over tcp).
    step();
    for (auto until = Clock::now() + 60s; servers.server(0).stats().checkpoints == 0 && Clock::now() < until;)
      std::this_thread::sleep_for(2ms);
    ASSERT_EQ(servers.server(0).stats().checkpoints, 1u) << "no checkpoint written in 60 s";
    // The next is asked for at once; these pushes land while it is taken.
    for (auto until = Clock::now() + 100ms; Clock::now() < until;) step();
    client.pull("small", before);  // every push taken in
    servers.stop();
    const ServerStats s = servers.server(0).stats();
    pushes = s.pushes;
    EXPECT_FALSE(s.final_checkpoint_failed);
    EXPECT_EQ(s.checkpoint_updates, s.pushes) << "the final checkpoint lost updates applied before the stop";
  }
  ServerOptions resumed = base;
  resumed.config = c;
  resumed.config.resume = true;
  ServerGroup servers(1, 1, resumed.config, resumed);
  EXPECT_EQ(servers.server(0).stats().resumed_updates, pushes);
  Client client(local_worker_options(servers.addresses(), c));
  client.declare("small", kSmall);
  client.declare("big", kBig);
  client.connect();
  client.pull("small", after);
  EXPECT_EQ(std::memcmp(before.data(), after.data(), kSmall * 4), 0)
      << "resumed from the final checkpoint, the parameters are not those pulled before the stop";
  servers.stop();
  fs::remove_all(dir);
}

// Checkpoints in `dir`, none due by time or count: only a worker's leave or loss takes one.
Config checkpoints_on_leave_only(Config c, const std::string& dir) {
  c.checkpoint_dir = dir;
  c.checkpoint_every_updates = 0;
  c.checkpoint_every_ms = 3600 * 1000;
  return c;
}

// The newest checkpoint once server 0 wrote one (30 s at most); none if it did not.
std::optional<ps::Checkpoint> first_checkpoint(ServerGroup& servers, const std::string& dir) {
  for (auto until = Clock::now() + 30s; servers.server(0).stats().checkpoints == 0 && Clock::now() < until;)
    std::this_thread::sleep_for(10ms);
  if (servers.server(0).stats().checkpoints == 0) return std::nullopt;
  return ps::load_newest_checkpoint(dir, 0, 1 << 20, [](const std::string&) {});
}

// A worker that left a running job is in a checkpoint within
// Checkpointer::kAfterLeave, none being due: a server that died after its
// leave, before the next periodic checkpoint, came back waiting for it for
// good (an SSP job stopped at its bound; an async one never ended).
TEST_P(PsCheckpointTest, AWorkerThatLeftIsCheckpointedSoonAndAResumeDoesNotWaitForIt) {
  const std::string dir = temp_dir();
  Config c = checkpoints_on_leave_only(sgd_config(GetParam(), kLr, 16), dir);
  c.staleness = kInfiniteStaleness;
  ServerGroup servers(1, 2, c, kept_running());
  const std::vector<float> g(64, 1.0f);
  Client stays(local_worker_options(servers.addresses(), c, 0));
  stays.declare("w", 64);
  stays.connect();
  {
    Client leaves(local_worker_options(servers.addresses(), c, 1));
    leaves.declare("w", 64);
    leaves.connect();
    leaves.push("w", g);
    leaves.clock();
  }
  stays.push("w", g);
  stays.clock();
  const auto newest = first_checkpoint(servers, dir);
  ASSERT_TRUE(newest.has_value()) << "no checkpoint within 30 s of a worker's leave";
  EXPECT_FALSE(newest->header.awaits(1)) << "a resume would wait for the worker that left";
  EXPECT_TRUE(newest->header.awaits(0)) << "the worker still training is expected back";
  servers.stop();
  fs::remove_all(dir);
}

// So is a worker lost (killed, with no reconnect window): saved as gone, not awaited.
TEST_P(PsCheckpointTest, AWorkerLostIsCheckpointedSoonAsGone) {
  const std::string dir = temp_dir();
  const Config c = checkpoints_on_leave_only(fault_config(GetParam()), dir);  // the idle_worker peer's config
  ServerGroup servers(1, 2, c, kept_running());
  Client stays(local_worker_options(servers.addresses(), c, 0));
  stays.declare("w", kFaultFloats);
  stays.connect();
  PeerProcess lost("idle_worker", GetParam(), 0, 1, {servers.addresses(), "1"});
  for (auto until = Clock::now() + 30s; servers.server(0).stats().applied_per_worker[1] == 0 && Clock::now() < until;)
    std::this_thread::sleep_for(10ms);
  ASSERT_GT(servers.server(0).stats().applied_per_worker[1], 0u) << "the worker to be lost never pushed";
  lost.kill_now();
  const auto newest = first_checkpoint(servers, dir);
  ASSERT_TRUE(newest.has_value()) << "no checkpoint within 30 s of a worker's loss";
  EXPECT_FALSE(newest->header.awaits(1)) << "a resume would wait for the worker lost";
  EXPECT_TRUE(newest->header.awaits(0));
  servers.stop();
  fs::remove_all(dir);
}

// Periodic checkpoints of an idle server were identical copies that pruned
// the distinct ones (--checkpoint-keep counted timer ticks), and a diverged
// model was written and pruned the last finite checkpoints: a resume served
// NaN without a word.
TEST_P(PsCheckpointTest, OnlyAChangedAndFiniteModelIsCheckpointedByTime) {
  const std::string dir = temp_dir();
  Config c = sgd_config(GetParam(), kLr, 16);
  c.checkpoint_dir = dir;
  c.checkpoint_every_ms = 20;
  c.checkpoint_every_updates = 0;
  c.checkpoint_keep = 2;
  c.staleness = kInfiniteStaleness;
  ServerGroup servers(1, 1, c, kept_running());
  Client client(local_worker_options(servers.addresses(), c));
  client.declare("w", 64);
  client.connect();
  client.push("w", std::vector<float>(64, 0.5f));
  client.clock();
  ASSERT_TRUE(first_checkpoint(servers, dir).has_value()) << "no checkpoint by time of a trained model";
  for (auto until = Clock::now() + 30s; servers.server(0).stats().pushes < 4 && Clock::now() < until;)
    std::this_thread::sleep_for(10ms);  // each of the 4 pieces
  const uint64_t pushes = servers.server(0).stats().pushes;
  ASSERT_EQ(pushes, 4u);
  // Until a checkpoint of all of them is written, and no write is under
  // way (a fixed 200 ms: a write of fewer still in its fsync on a loaded
  // disk ended in the window below, and the next period wrote all four).
  for (auto until = Clock::now() + 30s; servers.server(0).stats().checkpoint_updates < pushes && Clock::now() < until;)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(servers.server(0).stats().checkpoint_updates, pushes) << "no checkpoint of the four pieces";
  uint64_t written = servers.server(0).stats().checkpoints;
  for (auto until = Clock::now() + 30s; Clock::now() < until;) {
    std::this_thread::sleep_for(50ms);
    const uint64_t now = servers.server(0).stats().checkpoints;
    if (now == written) break;
    written = now;
  }
  std::this_thread::sleep_for(300ms);  // 15 periods with nothing applied
  EXPECT_EQ(servers.server(0).stats().checkpoints, written) << "checkpoints of a model that did not change";

  std::vector<float> diverged(64, 0.5f);
  diverged[37] = std::numeric_limits<float>::quiet_NaN();
  client.push("w", diverged);
  client.clock();
  for (auto until = Clock::now() + 30s; servers.server(0).stats().checkpoint_failures == 0 && Clock::now() < until;)
    std::this_thread::sleep_for(10ms);
  EXPECT_GT(servers.server(0).stats().checkpoint_failures, 0u) << "a model holding NaN was written";
  // A write that failed is tried again each period, nothing applied since (a full disk freed meanwhile).
  for (auto until = Clock::now() + 30s; servers.server(0).stats().checkpoint_failures < 3 && Clock::now() < until;)
    std::this_thread::sleep_for(10ms);
  EXPECT_GE(servers.server(0).stats().checkpoint_failures, 3u) << "a failed checkpoint was not tried again";
  // The pieces of that push without the NaN may be in one, taken before the NaN's landed.
  const auto newest = ps::load_newest_checkpoint(dir, 0, 1 << 20, [](const std::string&) {});
  ASSERT_TRUE(newest.has_value());
  EXPECT_TRUE(std::all_of(newest->params.begin(), newest->params.end(), [](float v) { return std::isfinite(v); }))
      << newest->path << " holds a NaN";
  EXPECT_GE(newest->header.updates(), pushes) << newest->path;
  servers.stop();
  fs::remove_all(dir);
}

// An init after a resume (Python's broadcast_parameters) changes the model
// though nothing is pushed: a server stopped then wrote no final checkpoint,
// "the newest holds this model", and the next resume lost the init.
TEST_P(PsCheckpointTest, AnInitAfterAResumeIsInTheFinalCheckpoint) {
  const std::string dir = temp_dir();
  const Config c = checkpoint_each_update(GetParam(), dir);
  one_step_then_stop(1, c);
  Config resume = c;
  resume.resume = true;
  {
    ServerGroup servers(1, 1, resume, kept_running());
    Client client(local_worker_options(servers.addresses(), resume));
    client.declare("w", 64);
    client.connect();
    client.init("w", std::vector<float>(64, 5.0f));
    std::vector<float> w(64);
    client.pull("w", w);  // the init was taken
    client.interrupt();   // no leave: a worker that left is a change of its own
    servers.stop();
  }
  const auto newest = ps::load_newest_checkpoint(dir, 0, 1 << 20, [](const std::string&) {});
  ASSERT_TRUE(newest.has_value());
  EXPECT_TRUE(std::all_of(newest->params.begin(), newest->params.end(), [](float v) { return v == 5.0f; }))
      << newest->path << " does not hold the init";
  fs::remove_all(dir);
}

// A server whose run ended held its directory until destroyed: a Python
// rdmaps.Server that served and stopped kept the next one of the process,
// resuming there, refused as "another server".
TEST_P(PsCheckpointTest, AServerWhoseRunEndedLetsTheNextOneResumeFromItsDirectory) {
  const std::string dir = temp_dir();
  const Config c = checkpoint_each_update(GetParam(), dir);
  ServerGroup first(1, 1, c, kept_running());
  {
    Client client(local_worker_options(first.addresses(), c));
    client.declare("w", 64);
    client.connect();
    client.push("w", std::vector<float>(64, 1.0f));
    client.clock();
  }
  first.stop();  // run() returned; the server object lives on
  const uint64_t pushes = first.server(0).stats().pushes;
  Config resume = c;
  resume.resume = true;
  ServerGroup next(1, 1, resume, kept_running());
  EXPECT_EQ(next.server(0).stats().resumed_updates, pushes);
  next.stop();
  fs::remove_all(dir);
}

// A server restarted without --resume (a supervisor that left the flag out)
// that a worker joined and no push reached: it wrote checkpoints of its
// zeros, numbered after the trained ones, so the next --resume served zeros
// and its writes pruned the trained model. It writes none before an update.
TEST_P(PsCheckpointTest, ARunWithoutResumeThatAppliedNothingLeavesTheCheckpointsAsTheyWere) {
  const std::string dir = temp_dir();
  Config c = checkpoint_each_update(GetParam(), dir);
  c.staleness = kInfiniteStaleness;
  const ServerOptions base = kept_running();
  constexpr size_t kSmall = 64;
  std::vector<float> before(kSmall), after(kSmall);
  uint64_t pushes = 0;
  {
    ServerGroup servers(1, 1, c, base);
    Client client(local_worker_options(servers.addresses(), c));
    client.declare("w", kSmall);
    client.connect();
    for (int i = 0; i < 3; ++i) {
      client.push("w", std::vector<float>(kSmall, 0.5f + static_cast<float>(i)));
      client.clock();
    }
    client.pull("w", before);
    servers.stop();
    pushes = servers.server(0).stats().pushes;
    ASSERT_GT(pushes, 0u);
  }
  {
    Config fresh = c;
    fresh.checkpoint_every_ms = 10;  // time-based checkpoints were due too
    ServerGroup servers(1, 1, fresh, base);
    {
      Client client(local_worker_options(servers.addresses(), fresh));
      client.declare("w", kSmall);
      client.connect();  // fixes the table and starts the lanes; nothing is pushed
    }
    std::this_thread::sleep_for(300ms);
    servers.stop();
    EXPECT_EQ(servers.server(0).stats().checkpoints, 0u) << "a run that applied nothing wrote checkpoints";
  }
  Config resumed = c;
  resumed.resume = true;
  ServerGroup servers(1, 1, resumed, base);
  EXPECT_EQ(servers.server(0).stats().resumed_updates, pushes) << "the resume did not take the trained checkpoint";
  Client client(local_worker_options(servers.addresses(), c));
  client.declare("w", kSmall);
  client.connect();
  client.pull("w", after);
  EXPECT_EQ(std::memcmp(before.data(), after.data(), kSmall * 4), 0);
  servers.stop();
  fs::remove_all(dir);
}

// A server restarted without --resume under a running job (its checkpoints
// gone, or the flag left out): the first worker to reconnect sent its Hello
// straight away, which fixed the empty server's table, and then stopped,
// rightly. Probes then found it "a job starting", which a start does not count
// as empty, so the next worker to join trained a model part trained, part
// zeros. A reconnect's Hello names the server process it had joined, and
// another that did not resume refuses it before taking anything from it.
TEST_P(PsCheckpointTest, AServerBackWithoutTheJobIsLeftEmptyByItsWorkersAndRefusedToTheNext) {
  Config c = sgd_config(GetParam(), kLr, 16);
  c.staleness = kInfiniteStaleness;
  ServerGroup servers(2, 2, c, kept_running());
  auto worker = [&](uint32_t id) {
    ClientOptions o = local_worker_options(servers.addresses(), c, id);
    o.workers = 2;
    o.config.reconnect_ms = 20000;
    auto client = std::make_unique<Client>(o);
    client->declare("w", 64);
    return client;
  };
  auto first = worker(0);
  first->connect();
  first->push("w", std::vector<float>(64, 1.0f));
  first->clock();
  for (const auto until = Clock::now() + 20s; servers.server(0).stats().pushes == 0 && Clock::now() < until;)
    std::this_thread::sleep_for(5ms);
  ASSERT_GT(servers.server(0).stats().pushes, 0u) << "server 0 applied no push: it holds no job's parameters";
  servers.restart(1, c);  // without resume
  std::vector<float> w(64);
  std::string what;
  EXPECT_EQ(error_code_of([&] { first->pull("w", w); }, &what), Errc::kPeerGone) << what;
  EXPECT_NE(what.find("came back without this job's parameters"), std::string::npos) << what;
  // Not "start it with --resume": one started so that found none of its checkpoints is refused alike.
  EXPECT_NE(what.find("(it resumed no checkpoint of it: started without --checkpoint-dir and --resume, or found none"),
            std::string::npos)
      << what;
  EXPECT_EQ(servers.server(1).stats().workers_connected, 0u) << "the worker that stopped joined the empty server";
  auto next = worker(1);
  EXPECT_EQ(error_code_of([&] { next->connect(); }, &what), Errc::kInvalidArgument) << what;
  EXPECT_NE(what.find("server(s) " + servers.server(0).address() +
                      " hold a job's parameters (resumed from a checkpoint, or updated) but " +
                      servers.server(1).address() + " started empty"),
            std::string::npos)
      << what;
  next.reset();
  first.reset();
  servers.stop();
}

// A worker lost within its --reconnect window is saved as expected back, not
// as gone: a resumed server took it for one that had left, and ended the job
// without it (it found nobody to reconnect to), or, its other worker having
// left, took the job for ended and waited for good for that one.
// Worker 1 of 2, reconnecting for up to 60 s, joined and one step taken.
std::unique_ptr<Client> join_as_worker_one(const std::string& addresses, const Config& c, int step) {
  ClientOptions o = local_worker_options(addresses, c, 1);
  o.workers = 2;
  o.config.reconnect_ms = 60000;
  auto client = std::make_unique<Client>(o);
  client->declare("w", kFloats);
  client->connect();
  client->push("w", gradient(step));
  client->clock();
  return client;
}

RDMAPS_TEST_PEER(reconnecting_worker) {
  Config c = checkpoint_each_update(args.transport, args.extra.at(1));
  c.staleness = kInfiniteStaleness;  // as the test's
  const auto client = join_as_worker_one(args.extra.at(0), c, 1);
  std::this_thread::sleep_for(60s);  // killed by the test
  return 0;
}

// Worker 0 joins; worker 1 (a process, --reconnect 60 s) pushes and is killed.
// Returns once the server saw it die.
void lose_worker_one(ServerGroup& servers, const std::string& dir, Client& zero) {
  zero.declare("w", kFloats);
  zero.connect();
  PeerProcess lost("reconnecting_worker", testing::TestWithParam<transport::TransportKind>::GetParam(), 0, 1,
                   {servers.addresses(), dir});
  auto until = Clock::now() + 30s;
  while (servers.server(0).stats().applied_per_worker.at(1) == 0 && Clock::now() < until)
    std::this_thread::sleep_for(5ms);
  ASSERT_GT(servers.server(0).stats().applied_per_worker.at(1), 0u) << "worker 1 pushed nothing";
  lost.kill_now();
  while (servers.server(0).stats().workers_lost == 0 && Clock::now() < until) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(servers.server(0).stats().workers_lost, 1u) << "the server did not see worker 1 die";
}

// A worker's clock taken after the last update belongs to the checkpoint
// too: the final checkpoint, seeing no update (and no leave) since the
// newest, was not written, and the worker was saved a clock behind. With two
// lanes, a lane's snapshot taken before it took a worker's last clock (lane 0
// had taken its leave) was the newest so, now and then, under load.
TEST_P(PsCheckpointTest, TheFinalCheckpointHoldsAClockTakenAfterTheLastUpdate) {
  const std::string dir = temp_dir();
  Config c = checkpoint_each_update(GetParam(), dir);
  c.server_threads = 1;  // its min_clock is then the lane's
  ServerGroup servers(1, 1, c, kept_running());
  Client client(local_worker_options(servers.addresses(), c, 0));
  client.declare("w", kFloats);
  client.connect();
  for (int step = 0; step < 3; ++step) {
    client.push("w", gradient(step));
    client.clock();
  }
  client.push("w", gradient(3));
  auto until = Clock::now() + 20s;
  // Every update in the newest checkpoint, then one more clock.
  while (servers.server(0).stats().checkpoint_updates < servers.server(0).stats().pushes && Clock::now() < until)
    std::this_thread::sleep_for(5ms);
  ASSERT_EQ(servers.server(0).stats().checkpoint_updates, servers.server(0).stats().pushes);
  client.clock();
  while (servers.server(0).stats().min_clock < 4 && Clock::now() < until) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(servers.server(0).stats().min_clock, 4u);
  servers.stop();  // the final checkpoint, the worker still connected
  const auto k = ps::load_newest_checkpoint(dir, 0, 1 << 30, [](const std::string&) {});
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(k->header.workers.at(0).clock, 4u) << "the worker's last clock was not saved";
  fs::remove_all(dir);
}

// Saved at its old clock, it held a resumed server's other workers back
// until it had stepped alone to them; it comes back no earlier than they are.
TEST_P(PsCheckpointTest, AWorkerWithinItsReconnectWindowIsSavedAsExpectedBack) {
  const std::string dir = temp_dir();
  Config c = checkpoint_each_update(GetParam(), dir);
  c.staleness = kInfiniteStaleness;  // worker 0 steps alone
  ServerGroup servers(1, 2, c, kept_running());
  {
    ClientOptions o = local_worker_options(servers.addresses(), c, 0);
    o.workers = 2;
    Client zero(o);
    lose_worker_one(servers, dir, zero);
    for (int step = 0; step < 10; ++step) {
      zero.push("w", gradient(step));
      zero.clock();
    }
  }                // worker 0 leaves
  servers.stop();  // the final checkpoint
  const auto k = ps::load_newest_checkpoint(dir, 0, 1 << 30, [](const std::string&) {});
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(k->header.workers.at(0).state, ps::WorkerState::kGone) << "worker 0 left";
  EXPECT_EQ(k->header.workers.at(1).state, ps::WorkerState::kConnected) << "worker 1 was within its window";
  EXPECT_FALSE(k->header.job_ended());
  EXPECT_TRUE(k->header.awaits(1));
  EXPECT_FALSE(k->header.awaits(0));
  EXPECT_EQ(k->header.workers.at(0).clock, 10u);
  EXPECT_EQ(k->header.workers.at(1).clock, 10u) << "worker 1 comes back where the others are, not at clock 1";
  fs::remove_all(dir);
}

// A worker that died, came back and then left is done: the window of its
// death, still open, kept the server running after its last worker left, and
// had it saved as expected back.
TEST_P(PsCheckpointTest, AWorkerThatCameBackAndLeftIsSavedAsGone) {
  const std::string dir = temp_dir();
  Config c = checkpoint_each_update(GetParam(), dir);
  c.staleness = kInfiniteStaleness;
  ServerGroup servers(1, 2, c);  // it exits when every worker is done
  {
    ClientOptions o = local_worker_options(servers.addresses(), c, 0);
    o.workers = 2;
    Client zero(o);
    lose_worker_one(servers, dir, zero);
    const auto one = join_as_worker_one(servers.addresses(), c, 2);  // back, under its id
  }                                                                  // both leave
  const auto left = Clock::now();
  servers.join();  // its final checkpoint written
  EXPECT_LT(Clock::now() - left, 20s) << "the server ran on for worker 1's old reconnect window";
  const auto k = ps::load_newest_checkpoint(dir, 0, 1 << 30, [](const std::string&) {});
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(k->header.workers.at(1).state, ps::WorkerState::kGone) << "worker 1 left after it came back";
  EXPECT_TRUE(k->header.job_ended());
  fs::remove_all(dir);
}

// Checkpoint 1 of the restart job's table, of 0.5s, with its workers as
// `states` says (state, clock, pushes); its header.
ps::CheckpointHeader write_job_checkpoint(const std::string& dir, const Config& c,
                                          std::vector<ps::CheckpointWorker> states) {
  ps::CheckpointHeader h;
  h.index = 0;
  h.servers = 1;
  h.shard_floats = kShard;
  h.staleness = c.staleness;
  h.rule = ps::RuleParams::from(c);
  h.tensors = {{"w", kFloats}};
  h.sequence = 1;
  h.versions.assign((kFloats + kShard - 1) / kShard, 7);
  h.workers = std::move(states);
  const std::vector<float> params(kFloats, 0.5f);
  ps::FloatRuns runs;
  runs.params = {params};
  ps::write_checkpoint(dir, h, runs);
  return h;
}

// Resuming a job that had ended (every worker gone) starts every worker at
// the furthest clock any got: each at its own, one that died at clock 5 held
// the others, at 100, under BSP until it had stepped 95 times alone.
TEST_P(PsCheckpointTest, AnEndedJobResumesWithEveryWorkerAtTheFurthestClock) {
  const std::string dir = temp_dir();
  Config c = restart_config(GetParam(), dir);
  const ps::CheckpointHeader h =
      write_job_checkpoint(dir, c, {{ps::WorkerState::kGone, 100, 4}, {ps::WorkerState::kGone, 5, 3}});
  EXPECT_EQ(h.resumed_clock(0), 100u);
  EXPECT_EQ(h.resumed_clock(1), 100u);
  c.resume = true;
  ServerOptions o = kept_running();
  ServerGroup servers(1, 2, c, o);
  EXPECT_EQ(servers.server(0).stats().min_clock, 100u) << "the workers are awaited at different clocks";
  servers.stop();
  fs::remove_all(dir);
}

// Worker `id` of `workers` of the restart job, connected.
std::unique_ptr<Client> restart_worker(const ServerGroup& servers, const Config& c, uint32_t id, uint32_t workers) {
  ClientOptions o = local_worker_options(servers.addresses(), c, id);
  o.workers = workers;
  o.timeout = 20s;
  auto client = std::make_unique<Client>(o);
  client->declare("w", kFloats);
  client->connect();
  return client;
}

// A job requeued with more workers than it had (or fewer, below) goes on
// from its checkpoint: it was refused ("--workers must be the job's"), and
// the model could only be trained afresh. Every worker of the new count is
// awaited at the slowest clock the checkpoint awaited and starts there.
TEST_P(PsCheckpointTest, AJobResumedWithMoreWorkersGoesOnFromItsModel) {
  const std::string dir = temp_dir();
  Config c = restart_config(GetParam(), dir);
  write_job_checkpoint(dir, c, {{ps::WorkerState::kConnected, 12, 5}, {ps::WorkerState::kConnected, 10, 4}});
  c.resume = true;
  LogWatch log;
  ServerGroup servers(1, 3, c, kept_running());
  EXPECT_EQ(servers.server(0).stats().min_clock, 10u);
  EXPECT_EQ(servers.server(0).stats().resumed_updates, 9u);
  EXPECT_TRUE(log.wait_for("(it was written for 2 workers: each of the 3 starts afresh at clock 10)", 5s))
      << log.text();
  std::vector<std::unique_ptr<Client>> workers;
  for (uint32_t w = 0; w < 3; ++w) workers.push_back(restart_worker(servers, c, w, 3));
  std::vector<std::vector<float>> pulled(3, std::vector<float>(kFloats));
  std::vector<std::thread> steps;
  for (uint32_t w = 0; w < 3; ++w)
    steps.emplace_back([&, w] {
      EXPECT_EQ(workers[w]->clock_value(), 10u) << "worker " << w;
      workers[w]->push("w", std::vector<float>(kFloats, 1.0f));
      workers[w]->clock();
      workers[w]->pull("w", pulled[w]);  // under BSP: once all three pushed
    });
  for (auto& t : steps) t.join();
  for (uint32_t w = 0; w < 3; ++w) EXPECT_EQ(pulled[w], std::vector<float>(kFloats, 0.5f - 3 * kLr)) << "worker " << w;
  for (auto& w : workers) w->interrupt();
  workers.clear();
  servers.stop();
  const auto k = ps::load_newest_checkpoint(dir, 0, 1 << 30, [](const std::string&) {});
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(k->header.workers.size(), 3u);
  EXPECT_EQ(k->header.updates(), 9u + 3 * 4) << "three pushes of four shards each after the nine resumed";
  fs::remove_all(dir);
}

// ... and with fewer: the ids the job no longer has are not waited for (one
// that had left is ignored for the clock), and their pushes stay counted.
TEST_P(PsCheckpointTest, AJobResumedWithFewerWorkersWaitsForNoIdItNoLongerHas) {
  const std::string dir = temp_dir();
  Config c = restart_config(GetParam(), dir);
  write_job_checkpoint(
      dir, c,
      {{ps::WorkerState::kConnected, 20, 7}, {ps::WorkerState::kGone, 30, 2}, {ps::WorkerState::kConnected, 25, 1}});
  c.resume = true;
  ServerGroup servers(1, 1, c, kept_running());
  EXPECT_EQ(servers.server(0).stats().min_clock, 20u);
  EXPECT_EQ(servers.server(0).stats().resumed_updates, 10u);
  auto worker = restart_worker(servers, c, 0, 1);
  EXPECT_EQ(worker->clock_value(), 20u);
  worker->push("w", std::vector<float>(kFloats, 1.0f));
  worker->clock();
  std::vector<float> w(kFloats);
  worker->pull("w", w);  // BSP: waited for ids 1 and 2 until the timeout
  EXPECT_EQ(w, std::vector<float>(kFloats, 0.5f - kLr));
  worker->interrupt();
  worker.reset();
  servers.stop();
  fs::remove_all(dir);
}

// Server 1's newest checkpoints damaged or gone: it resumed an older one,
// server 0 its newest, and the job went on with the model's two ranges of
// moments far apart without a word.
TEST_P(PsCheckpointTest, ServersResumedFromMomentsFarApartAreSaidToBe) {
  const std::string dir = temp_dir();
  Config c = checkpoint_each_update(GetParam(), dir);
  c.checkpoint_keep = 1000;
  c.staleness = kInfiniteStaleness;
  const ServerOptions base = kept_running();
  {
    ServerGroup servers(2, 1, c, base);
    Client client(local_worker_options(servers.addresses(), c));
    client.declare("w", 64);
    client.connect();
    std::vector<float> w(64);
    for (uint64_t step = 1; step <= 12; ++step) {  // server 1 checkpoints each step
      client.push("w", std::vector<float>(64, 0.25f));
      client.clock();
      client.pull("w", w);
      for (auto until = Clock::now() + 30s;
           servers.server(1).stats().checkpoint_updates < 2 * step && Clock::now() < until;)
        std::this_thread::sleep_for(5ms);
    }
    servers.stop();
  }
  std::vector<fs::path> ones;  // server 1's, oldest first
  for (const auto& f : fs::directory_iterator(dir))
    if (f.path().filename().string().starts_with("server-1-")) ones.push_back(f.path());
  std::sort(ones.begin(), ones.end());
  ASSERT_GE(ones.size(), 12u);
  while (ones.back().filename().string() > ones[0].filename().string() && ones.size() > 2) {  // its first 2 steps'
    fs::remove(ones.back());
    ones.pop_back();
  }
  std::optional<LogWatch> log(std::in_place);
  Config resume = c;
  resume.resume = true;
  {
    ServerGroup servers(2, 1, resume, base);
    {
      Client client(local_worker_options(servers.addresses(), resume));
      client.declare("w", 64);
      client.connect();
    }  // leaves before the servers stop (it waited 5 s for them)
    servers.stop();
  }
  const std::vector<std::string> lines = lines_of(log->text());
  log.reset();
  std::string said;
  for (const auto& line : lines)
    if (line.find("resumed checkpoints of different moments") != std::string::npos) said = line;
  EXPECT_NE(said.find("of this worker's steps, server 0 ("), std::string::npos) << said;
  EXPECT_NE(said.find(") 12, server 1 ("), std::string::npos) << said;
  const size_t second = said.find(") ", said.find("server 1 ("));
  ASSERT_NE(second, std::string::npos) << said;
  EXPECT_LE(std::stoul(said.substr(second + 2)), 3u) << said;  // the steps of its oldest checkpoints
  EXPECT_NE(said.find(": a server whose newest checkpoint was damaged or missing"), std::string::npos) << said;
  fs::remove_all(dir);
}

// Servers holding tensors of different sizes hold different numbers of a
// worker's pieces per step: taken for steps, a resume of one moment was
// warned of as moments apart.
TEST_P(PsCheckpointTest, ServersResumedFromOneMomentAreNotSaidToBeApartWhateverTheirTensors) {
  const std::string dir = temp_dir();
  Config c = checkpoint_each_update(GetParam(), dir);
  c.staleness = kInfiniteStaleness;
  std::vector<std::pair<std::string, size_t>> tensors;
  for (int i = 0; i < 8; ++i) tensors.emplace_back("small" + std::to_string(i), 4);  // server 0's, 9 segments
  tensors.emplace_back("big", 64);                                                   // most of it server 1's
  auto start = [&](ServerGroup& servers, const Config& config) {
    auto client = std::make_unique<Client>(local_worker_options(servers.addresses(), config));
    for (const auto& [name, floats] : tensors) client->declare(name, floats);
    client->connect();
    return client;
  };
  {
    ServerGroup servers(2, 1, c, kept_running());
    auto client = start(servers, c);
    for (int step = 0; step < 5; ++step) {
      // Every other one first: none adjoins the one before, so none is gathered (as device pushes never are).
      for (const int i : {0, 2, 4, 6, 1, 3, 5, 7, 8})
        client->push(tensors[i].first, std::vector<float>(tensors[i].second, 0.5f));
      client->clock();
    }
    client.reset();
    servers.stop();
  }
  LogWatch log;
  Config resume = c;
  resume.resume = true;
  ServerGroup servers(2, 1, resume, kept_running());
  start(servers, resume).reset();
  servers.stop();
  EXPECT_EQ(log.text().find("resumed checkpoints of different moments"), std::string::npos) << log.text();
  fs::remove_all(dir);
}

// Both servers gone: the reconnect line of the second quoted the first's
// failure as its own ("... peer 127.0.0.1:14030 ... closed; reconnecting to
// 127.0.0.1:14031").
TEST_P(PsCheckpointTest, EachServerFoundDownIsNamedInItsOwnReconnectLine) {
  const std::string dir = temp_dir();
  Config c = checkpoint_each_update(GetParam(), dir);
  c.staleness = kInfiniteStaleness;
  c.reconnect_ms = 20000;
  ServerGroup servers(2, 1, c, kept_running());
  Config resume = c;
  resume.resume = true;
  std::optional<LogWatch> log(std::in_place);
  const std::string a = servers.server(0).address(), b = servers.server(1).address();
  {
    Client client(local_worker_options(servers.addresses(), c));
    client.declare("w", 64);
    client.connect();
    std::vector<float> w(64);
    client.push("w", w);
    client.clock();
    client.pull("w", w);
    servers.restart(0, resume);  // both went (killed), and came back
    servers.restart(1, resume);
    client.pull("w", w);  // reconnects both
  }
  const std::vector<std::string> lines = lines_of(log->text());
  log.reset();
  std::vector<std::string> reconnecting;
  for (const auto& line : lines)
    if (line.find("; reconnecting to ") != std::string::npos) reconnecting.push_back(line);
  ASSERT_EQ(reconnecting.size(), 2u);
  EXPECT_NE(reconnecting[0].find("server " + a), std::string::npos) << reconnecting[0];
  EXPECT_NE(
      reconnecting[1].find("rdmaps worker 0: server " + b + " is down too (the call ended on another's failure: "),
      std::string::npos)
      << reconnecting[1];
  servers.stop();
  fs::remove_all(dir);
}

// Two servers resumed, one of them without its checkpoints (deleted, on
// another node's disk): the worker refuses to go on, before joining either.
// rdmaps-train's first worker kept "the trained weights" wherever any server
// resumed, so the empty server's half stayed zeros and the run ended at
// chance accuracy, exit 0.
TEST_P(PsCheckpointTest, AJobWhereOnlySomeServersResumedIsRefusedNamingThem) {
  const std::string dir = temp_dir();
  const Config c = checkpoint_each_update(GetParam(), dir);
  const ServerOptions base = kept_running();
  {
    ServerGroup servers(2, 1, c, base);
    Client client(local_worker_options(servers.addresses(), c));
    client.declare("w", 64);
    client.connect();
    client.push("w", std::vector<float>(64, 1.0f));
    client.clock();
    std::vector<float> w(64);
    client.pull("w", w);
    servers.stop();  // each writes its final checkpoint
  }
  size_t removed = 0;
  for (const auto& f : fs::directory_iterator(dir))
    if (f.path().filename().string().starts_with("server-1-")) removed += fs::remove(f.path());
  ASSERT_GT(removed, 0u) << "server 1 wrote no checkpoint in " << dir;
  Config resume = c;
  resume.resume = true;
  // Server 1 without --resume: with it, finding server 0's checkpoints and
  // none of its own, it refuses to start
  // (PsCheckpointTest.AResumeFindingOnlyOtherServersCheckpointsRefusesToStart).
  ServerGroup servers(2, 1, c, base);
  servers.restart(0, resume);
  Client client(local_worker_options(servers.addresses(), resume));
  client.declare("w", 64);
  std::string what;
  EXPECT_EQ(error_code_of([&] { client.connect(); }, &what), Errc::kInvalidArgument) << what;
  EXPECT_NE(what.find("server(s) " + servers.server(0).address() +
                      " hold a job's parameters (resumed from a checkpoint, or updated) but " +
                      servers.server(1).address() + " started empty: the model would be part trained, part zeros"),
            std::string::npos)
      << what;
  // Refused before any Hello: the empty server fixed no table, so it writes no checkpoint of zeros
  // that a second try would resume from (the refusal came after joining both, and the next start passed).
  EXPECT_EQ(servers.server(1).stats().workers_connected, 0u);
  servers.stop();
  for (const auto& f : fs::directory_iterator(dir))
    EXPECT_FALSE(f.path().filename().string().starts_with("server-1-")) << f.path() << " written by the empty server";
  fs::remove_all(dir);
}

// A job's servers sharing one directory, whose second run's server 1 died
// before its first checkpoint: resumed, server 0 took the second run's
// newest, server 1 the first run's, and the worker joined half of one model
// to half of another without a word.
TEST_P(PsCheckpointTest, ServersResumedFromDifferentRunsAreRefusedNamingBoth) {
  const std::string dir = temp_dir();
  const Config c = checkpoint_each_update(GetParam(), dir);
  const ServerOptions base = kept_running();
  auto train = [&](float gradient) {
    ServerGroup servers(2, 1, c, base);
    Client client(local_worker_options(servers.addresses(), c));
    client.declare("w", 64);
    client.connect();
    client.push("w", std::vector<float>(64, gradient));
    client.clock();
    std::vector<float> w(64);
    client.pull("w", w);
    servers.stop();  // each writes its final checkpoint
  };
  auto server_1_files = [&] {
    std::set<std::string> names;
    for (const auto& f : fs::directory_iterator(dir))
      if (f.path().filename().string().starts_with("server-1-")) names.insert(f.path().string());
    return names;
  };
  train(1.0f);
  const std::set<std::string> first_run = server_1_files();
  ASSERT_FALSE(first_run.empty()) << "server 1 wrote no checkpoint in " << dir;
  train(2.0f);  // without --resume: the first run's files are kept beside the second's
  size_t removed = 0;
  for (const std::string& f : server_1_files())
    if (!first_run.count(f)) removed += fs::remove(f);
  ASSERT_GT(removed, 0u) << "the second run's server 1 wrote no checkpoint";
  Config resume = c;
  resume.resume = true;
  ServerGroup servers(2, 1, resume, base);
  Client client(local_worker_options(servers.addresses(), resume));
  client.declare("w", 64);
  std::string what;
  EXPECT_EQ(error_code_of([&] { client.connect(); }, &what), Errc::kInvalidArgument) << what;
  EXPECT_NE(what.find("servers 0 (" + servers.server(0).address() + ") and 1 (" + servers.server(1).address() +
                      ") hold different jobs' parameters"),
            std::string::npos)
      << what;
  for (uint32_t i = 0; i < 2; ++i) EXPECT_EQ(servers.server(i).stats().workers_connected, 0u);
  servers.stop();
  fs::remove_all(dir);
}

// A server restarted with --resume from another run's checkpoints (its
// directory mixed up): a worker reconnecting took it back as its own and
// trained the other run's model.
TEST_P(PsCheckpointTest, AWorkerReconnectingToAServerResumedFromAnotherRunStops) {
  const std::string dir = temp_dir(), other_dir = temp_dir();
  const Config c = checkpoint_each_update(GetParam(), dir), other = checkpoint_each_update(GetParam(), other_dir);
  auto step = [](Client& client) {
    client.push("w", std::vector<float>(64, 1.0f));
    client.clock();
    std::vector<float> w(64);
    client.pull("w", w);
  };
  {
    ServerGroup servers(1, 1, other, kept_running());
    Client client(local_worker_options(servers.addresses(), other));
    client.declare("w", 64);
    client.connect();
    step(client);
    servers.stop();
  }
  ServerGroup servers(1, 1, c, kept_running());
  ClientOptions o = local_worker_options(servers.addresses(), c);
  o.config.reconnect_ms = 10000;
  o.timeout = 20s;
  Client client(o);
  client.declare("w", 64);
  client.connect();
  step(client);
  Config resume = other;
  resume.resume = true;
  servers.restart(0, resume);
  std::string what;
  EXPECT_EQ(error_code_of([&] { step(client); }, &what), Errc::kPeerGone) << what;
  EXPECT_NE(what.find("this server holds job"), std::string::npos) << what;
  EXPECT_EQ(servers.server(0).stats().workers_connected, 0u);
  servers.stop();
  fs::remove_all(dir);
  fs::remove_all(other_dir);
}

// A job's directories swapped (ranks placed on other hosts): each server
// found none of its own checkpoints, started empty, and the job trained anew
// beside the model there.
TEST_P(PsCheckpointTest, AResumeFindingOnlyOtherServersCheckpointsRefusesToStart) {
  const std::string dir = temp_dir();
  const Config c = checkpoint_each_update(GetParam(), dir);
  one_step_then_stop(2, c);
  for (const auto& f : fs::directory_iterator(dir))
    if (f.path().filename().string().starts_with("server-1-")) fs::remove(f.path());
  ServerOptions o = kept_running();
  o.listen = "127.0.0.1:0";
  o.index = 1;
  o.servers = 2;
  o.config = c;
  o.config.resume = true;
  o.config.secret = test_secret();
  std::string what;
  EXPECT_EQ(error_code_of([&] { Server server(o); }, &what), Errc::kInvalidArgument) << what;
  EXPECT_NE(what.find("--resume: " + dir + " holds checkpoints of server(s) 0 but none of this server, index 1"),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("the job's --servers grew"), std::string::npos) << what;  // as server 0's checkpoint was of 1
  fs::remove_all(dir);
}

// Resumed under DC-ASGD-a from a checkpoint without optimizer state (an SGD
// run's), the mean square starts at 0, and so does the count of its bias
// correction: it counted from the shard's version, which made the correction
// near 1 where it must be 1 / (1 - m) (lambda0 / sqrt(ms) 4x too large here);
// resumed again, the count goes on from that resume.
TEST_P(PsCheckpointTest, ResumedWithAFreshMeanSquareTheBiasCorrectionCountsFromTheResume) {
  const std::string dir = temp_dir();
  constexpr size_t kN = 256;
  Config c = sgd_config(GetParam(), 0.1f, kN);
  c.staleness = kInfiniteStaleness;
  c.server_threads = 1;
  c.checkpoint_dir = dir;
  c.checkpoint_every_ms = 0;
  ServerOptions base;
  base.exit_when_done = false;
  base.log_connections = false;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> w0(kN);
  {
    ServerGroup servers(1, 1, c, base);
    Client client(local_worker_options(servers.addresses(), c));
    client.declare("w", kN);
    client.connect();
    for (auto& x : w0) x = u(rng);
    client.init("w", w0);
    std::vector<float> g(kN, 0.01f);
    for (int i = 0; i < 30; ++i) {  // version 30 at the checkpoint
      client.push("w", g);
      client.clock();
    }
    client.pull("w", w0);
    servers.stop();  // the final checkpoint
  }
  Config dc = c;
  dc.rule = UpdateRule::kDcAsgdAdaptive;
  dc.dc_lambda0 = 0.5f;
  dc.ms_momentum = 0.9f;
  dc.ms_bias_correction = true;
  dc.dc_bound = 0;
  dc.dc_tau0 = 0;
  dc.resume = true;
  ServerOptions resumed = base;
  resumed.config = dc;
  const math::UpdateParams p = ps::update_params(dc);
  // Pushes `pushes` gradients on the pulled `from` (0, 1, 2... stale) to a
  // server resumed from the newest checkpoint and checks them against
  // DC-ASGD-a with t counting on from `t0`; `ms` carries the mean square.
  auto resume_and_push = [&](const std::vector<float>& from, size_t pushes, uint64_t t0, std::vector<double>& ms,
                             const char* what) {
    ServerGroup servers(1, 1, dc, resumed);
    Client client(local_worker_options(servers.addresses(), dc));
    client.declare("w", kN);
    client.connect();
    std::vector<float> bak(kN), got(kN);
    client.pull("w", bak);
    EXPECT_EQ(bak, from) << what;
    std::vector<std::vector<float>> g(pushes, std::vector<float>(kN));
    for (auto& gk : g)
      for (auto& x : gk) x = u(rng);
    for (const auto& gk : g) client.push("w", gk);
    client.clock();
    client.pull("w", got);
    double worst = 0;
    for (size_t i = 0; i < kN; ++i) {
      double w = from[i];
      for (uint64_t t = 1; t <= g.size(); ++t)
        w = reference_update(p, dc.learning_rate, reference_ms_scale(dc.ms_momentum, t0 + t), w, g[t - 1][i], from[i],
                             ms[i]);
      worst = std::max(worst, std::abs(got[i] - w) / std::max(1.0, std::abs(w)));
    }
    EXPECT_LE(worst, 1e-6) << what;
    servers.stop();  // the final checkpoint
    return got;
  };
  std::vector<double> ms(kN, 0.0);
  const std::vector<float> after =
      resume_and_push(w0, 3, 0, ms, "the update after the resume is not DC-ASGD-a's with t counted from the resume");
  // Resumed again, now from a checkpoint with the mean square: t goes on from
  // 3 (the checkpoint held no origin, and t counted from version 0: 34).
  resume_and_push(after, 2, 3, ms,
                  "the update after a second resume is not DC-ASGD-a's with t counted on from the first resume");
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Transports, PsCheckpointTest,
                         testing::Values(transport::TransportKind::kTcp, transport::TransportKind::kShm),
                         transport_param_name);

}  // namespace
}  // namespace rdmaps::test
