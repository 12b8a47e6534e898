// Open files: the soft limit is raised to the hard one, and a server told
// what it will need says so, with the numbers, before workers fail.
#include "transport/file_limit.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/common/scoped_file_limit.h"

namespace rdmaps::test {
namespace {

TEST(FileLimit, RaiseTakesTheHardLimit) {
  ScopedSoftFileLimit low(256);
  if (!low.lowered()) GTEST_SKIP() << "the hard limit is not above 256";
  const transport::FileLimit now = transport::raise_open_file_limit();
  EXPECT_EQ(ScopedSoftFileLimit::soft_now(), low.saved().rlim_max);
  EXPECT_EQ(now.soft, static_cast<uint64_t>(low.saved().rlim_max));
  EXPECT_EQ(now.hard, static_cast<uint64_t>(low.saved().rlim_max));
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
