// Open files: the soft limit is raised to the hard one, and a server told
// what it will need says so, with the numbers, before workers fail.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <string>

#include "transport/file_limit.h"

namespace rdmaps::test {
namespace {

TEST(FileLimit, RaiseTakesTheHardLimit) {
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  if (saved.rlim_max != RLIM_INFINITY && saved.rlim_max <= 256) GTEST_SKIP() << "hard limit too low to lower under";
  rlimit low = saved;
  low.rlim_cur = 256;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  const transport::FileLimit now = transport::raise_open_file_limit();
  rlimit after{};
  getrlimit(RLIMIT_NOFILE, &after);
  setrlimit(RLIMIT_NOFILE, &saved);
  EXPECT_EQ(after.rlim_cur, saved.rlim_max);
  EXPECT_EQ(now.soft, static_cast<uint64_t>(saved.rlim_max));
  EXPECT_EQ(now.hard, static_cast<uint64_t>(saved.rlim_max));
}

TEST(FileLimit, AServerThatWillRunOutSaysHowFarItGetsAndWhatToDo) {
  // 64 workers on 16 lanes need 3 * 64 * 16 + 64 = 3136 files.
  const auto warning = transport::file_limit_warning(64, 16, {1024, 4096});
  ASSERT_TRUE(warning);
  for (const char* part : {"64 workers on 16 lanes", "about 3136 open files", "may open 1024", "hard limit is 4096",
                           "past about 20 ", "--server-threads"})
    EXPECT_NE(warning->find(part), std::string::npos) << part << " missing from: " << *warning;
  EXPECT_FALSE(transport::file_limit_warning(64, 16, {4096, 4096}));
  EXPECT_FALSE(transport::file_limit_warning(16, 2, {1024, 1024}));
  EXPECT_FALSE(transport::file_limit_warning(4096, 64, {RLIM_INFINITY, RLIM_INFINITY}));
}

}  // namespace
}  // namespace rdmaps::test
