// Memory a process may take: the machine's MemAvailable or, tighter, the
// limit of its memory cgroup (v1 or v2, its own or an ancestor's), less what
// the cgroup holds that the kernel cannot reclaim.
#include "transport/memory_limit.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

namespace rdmaps::test {
namespace {

namespace fs = std::filesystem;

class FakeProc {
 public:
  FakeProc() : root_(fs::temp_directory_path() / ("rdmaps-memlimit-" + std::to_string(getpid()))) {
    fs::remove_all(root_);
    fs::create_directories(root_);
    sources.meminfo = write("meminfo", "MemTotal:       25000000 kB\nMemAvailable:   20000000 kB\n");
  }
  ~FakeProc() { fs::remove_all(root_); }
  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = root_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }
  std::string dir(const std::string& name) const { return (root_ / name).string(); }
  transport::MemorySources sources;

 private:
  fs::path root_;
};

TEST(MemoryLimit, WithoutACgroupLimitMemAvailableCounts) {
  FakeProc proc;
  proc.sources.cgroup = proc.write("cgroup", "0::/user.slice\n");
  proc.sources.mountinfo =
      proc.write("mountinfo", "40 30 0:37 / " + proc.dir("cg2") + " rw,relatime - cgroup2 cgroup2 rw\n");
  proc.write("cg2/user.slice/memory.max", "max\n");
  proc.write("cg2/user.slice/memory.current", "1000\n");
  const auto a = transport::available_memory(proc.sources);
  EXPECT_EQ(a.bytes, uint64_t{20000000} * 1024);
  EXPECT_EQ(a.bound, "MemAvailable");
}

TEST(MemoryLimit, AV2AncestorsLimitBindsLessItsReclaimableCache) {
  FakeProc proc;
  proc.sources.cgroup = proc.write("cgroup", "0::/slurm/job_7/step_0\n");
  proc.sources.mountinfo =
      proc.write("mountinfo", "22 1 0:21 / /proc rw - proc proc rw\n40 30 0:37 / " + proc.dir("cg2") +
                                  " rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n");
  proc.write("cg2/slurm/job_7/step_0/memory.max", "max\n");
  proc.write("cg2/slurm/job_7/step_0/memory.current", "100\n");
  // The job's limit: 4 GB, of which 1.5 GB in use, 0.5 GB of it page cache the kernel may drop.
  proc.write("cg2/slurm/job_7/memory.max", "4000000000\n");
  proc.write("cg2/slurm/job_7/memory.current", "1500000000\n");
  proc.write("cg2/slurm/job_7/memory.stat", "anon 1000000000\nfile 500000000\ninactive_file 500000000\n");
  proc.write("cg2/slurm/memory.max", "max\n");
  const auto a = transport::available_memory(proc.sources);
  EXPECT_EQ(a.bytes, uint64_t{3000000000});
  EXPECT_EQ(a.bound, "the limit of memory cgroup /slurm/job_7");
}

TEST(MemoryLimit, AV1MemoryControllerUnderAMountRootCounts) {
  FakeProc proc;
  proc.sources.cgroup = proc.write("cgroup", "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n");
  // The container sees its own cgroup as the mount's root (v1 "root" field).
  proc.sources.mountinfo = proc.write(
      "mountinfo", "34 30 0:31 /docker/abc " + proc.dir("memory") + " rw,relatime - cgroup cgroup rw,memory\n");
  proc.write("memory/memory.limit_in_bytes", "2147483648\n");
  proc.write("memory/memory.usage_in_bytes", "1073741824\n");
  proc.write("memory/memory.stat", "cache 0\ntotal_inactive_file 0\n");
  auto a = transport::available_memory(proc.sources);
  EXPECT_EQ(a.bytes, uint64_t{1} << 30);
  EXPECT_EQ(a.bound, "the limit of memory cgroup /");
  // v1 writes "no limit" as a page-rounded LONG_MAX.
  proc.write("memory/memory.limit_in_bytes", "9223372036854771712\n");
  a = transport::available_memory(proc.sources);
  EXPECT_EQ(a.bound, "MemAvailable");
}

TEST(MemoryLimit, NothingReadableIsZero) {
  transport::MemorySources none{"/nonexistent/meminfo", "/nonexistent/cgroup", "/nonexistent/mountinfo"};
  EXPECT_EQ(transport::available_memory(none).bytes, 0u);
  EXPECT_GT(transport::available_memory().bytes, 0u) << "/proc/meminfo has MemAvailable on Linux";
}

// The real kernel: a child moved into a memory cgroup of 256 MiB sees that limit.
TEST(MemoryLimit, AProcessInARealMemoryCgroupSeesItsLimit) {
  const fs::path v1 = "/sys/fs/cgroup/memory", v2 = "/sys/fs/cgroup";
  fs::path group;
  std::string limit_file;
  std::error_code ec;
  if (fs::exists(v1 / "memory.limit_in_bytes", ec)) {
    group = v1 / ("rdmaps-test-" + std::to_string(getpid()));
    limit_file = "memory.limit_in_bytes";
  } else if (fs::exists(v2 / "cgroup.controllers", ec)) {
    group = v2 / ("rdmaps-test-" + std::to_string(getpid()));
    limit_file = "memory.max";
  }
  if (group.empty() || !fs::create_directory(group, ec))
    GTEST_SKIP() << "cannot make a memory cgroup here (needs root and a writable cgroup mount)";
  if (!(std::ofstream(group / limit_file) << (256 << 20)))
    GTEST_SKIP() << "cannot set " << (group / limit_file) << ": " << std::strerror(errno);
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const pid_t child = fork();
  if (child == 0) {
    std::ofstream(group / "cgroup.procs") << getpid() << std::flush;
    const auto a = transport::available_memory();
    const std::string line = std::to_string(a.bytes) + " " + a.bound;
    (void)!::write(out[1], line.data(), line.size());
    _exit(0);
  }
  close(out[1]);
  char buf[512] = {};
  const ssize_t n = read(out[0], buf, sizeof(buf) - 1);
  close(out[0]);
  int status = 0;
  waitpid(child, &status, 0);
  rmdir(group.c_str());
  ASSERT_GT(n, 0);
  const std::string line(buf, static_cast<size_t>(n));
  const uint64_t bytes = std::stoull(line);
  EXPECT_LE(bytes, uint64_t{256} << 20) << line;
  EXPECT_GT(bytes, uint64_t{200} << 20) << line;  // a forked test process holds a few MB
  EXPECT_NE(line.find("the limit of memory cgroup /"), std::string::npos) << line;
  EXPECT_NE(line.find(group.filename().string()), std::string::npos) << line;
}

}  // namespace
}  // namespace rdmaps::test
