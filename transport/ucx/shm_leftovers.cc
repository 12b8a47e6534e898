#include "transport/ucx/shm_leftovers.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "rdmaps/log.h"

namespace rdmaps::transport::ucx {

namespace {
constexpr const char* kPrefix = "ucx_shm_posix_";
constexpr time_t kMinAgeSeconds = 5;  // a file being created is open by then, but never judge a new one

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) out.emplace_back(e->d_name);
    ::closedir(d);
  }
  return out;
}

bool is_pid(const std::string& name) {
  if (name.empty()) return false;
  for (char c : name)
    if (c < '0' || c > '9') return false;
  return true;
}
}  // namespace

ShmSweep remove_stale_shm_files(const std::string& dir) {
  ShmSweep sweep;
  const uid_t me = ::geteuid();
  std::vector<std::pair<std::string, struct stat>> candidates;
  const time_t now = std::time(nullptr);
  for (const std::string& name : entries(dir)) {
    if (name.rfind(kPrefix, 0) != 0) continue;
    struct stat st {};
    const std::string path = dir + "/" + name;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != me) continue;
    if (now - st.st_mtime < kMinAgeSeconds) continue;
    candidates.emplace_back(path, st);
  }
  if (candidates.empty()) return sweep;
  // Held: open by a process (fd) or mapped by one (maps). A process of ours
  // we cannot look into makes every file count as held.
  std::set<std::pair<dev_t, ino_t>> held;
  for (const std::string& pid : entries("/proc")) {
    if (!is_pid(pid)) continue;
    struct stat owner {};
    if (::stat(("/proc/" + pid).c_str(), &owner) != 0 || (owner.st_uid != me && me != 0)) continue;
    const std::string fds = "/proc/" + pid + "/fd";
    DIR* d = ::opendir(fds.c_str());
    if (!d) {
      if (::access(("/proc/" + pid).c_str(), F_OK) == 0) return sweep;  // alive, unreadable: keep everything
      continue;
    }
    while (const dirent* e = ::readdir(d)) {
      struct stat st {};
      if (is_pid(e->d_name) && ::stat((fds + "/" + e->d_name).c_str(), &st) == 0) held.insert({st.st_dev, st.st_ino});
    }
    ::closedir(d);
    std::ifstream maps("/proc/" + pid + "/maps");
    for (std::string line; std::getline(maps, line);) {
      // "addr perms offset dev inode path": the inode of a mapped file.
      unsigned long long inode = 0;
      char path[512] = "";
      if (std::sscanf(line.c_str(), "%*s %*s %*s %*s %llu %511s", &inode, path) == 2 && inode != 0 &&
          std::string(path).find(kPrefix) != std::string::npos)
        for (const auto& [file, st] : candidates)
          if (st.st_ino == inode) held.insert({st.st_dev, st.st_ino});
    }
  }
  for (const auto& [path, st] : candidates) {
    if (held.count({st.st_dev, st.st_ino})) continue;
    if (::unlink(path.c_str()) == 0) {
      ++sweep.files;
      sweep.bytes += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  return sweep;
}

void sweep_stale_shm_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* dir = std::getenv("UCX_POSIX_DIR");
    const std::string where = dir && *dir ? dir : "/dev/shm";
    const ShmSweep s = remove_stale_shm_files(where);
    if (s.files)
      logf(LogLevel::kInfo,
           "rdmaps: removed %llu shared-memory file(s) (%.1f MB) in %s that killed UCX processes left "
           "behind (UCX_POSIX_USE_PROC_LINK=n keeps them until freed)",
           static_cast<unsigned long long>(s.files), s.bytes / 1e6, where.c_str());
  });
}

}  // namespace rdmaps::transport::ucx
