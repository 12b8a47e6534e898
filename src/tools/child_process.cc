#include "src/tools/child_process.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "rdmaps/error.h"
#include "transport/auth.h"

extern char** environ;

namespace rdmaps::tools {

Child spawn_self(const std::string& program, std::vector<std::string> args) {
  int fds[2];
  if (pipe(fds) != 0) throw Error(Errc::kIo, "pipe() for a child process");
  args.insert(args.begin(), program);
  args.push_back("--report-fd");
  args.push_back(std::to_string(fds[1]));
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  Child child;
  int rc = posix_spawn(&child.pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    throw Error(Errc::kIo, std::string("starting a child process: ") + std::strerror(rc));
  }
  child.read_fd = fds[0];
  return child;
}

void read_report(const Child& child, void* data, size_t n, const std::string& what) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t got = read(child.read_fd, p, n);
    if (got <= 0) throw Error(Errc::kIo, "the " + what + " process exited before it reported (see its output above)");
    p += got;
    n -= static_cast<size_t>(got);
  }
}

std::string read_all(const Child& child) {
  std::string out;
  char buf[4096];
  for (ssize_t got; (got = read(child.read_fd, buf, sizeof(buf))) > 0;) out.append(buf, static_cast<size_t>(got));
  return out;
}

int wait_child(Child& child) {
  if (child.read_fd >= 0) close(child.read_fd);
  child.read_fd = -1;
  if (child.pid <= 0) return 0;
  int status = 0;
  waitpid(child.pid, &status, 0);
  child.pid = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void report(int fd, const void* data, size_t n) {
  auto* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t put = write(fd, p, n);
    if (put <= 0) throw Error(Errc::kIo, "reporting to the parent process");
    p += put;
    n -= static_cast<size_t>(put);
  }
}

void share_secret_with_children(const Config& config) {
  if (!config.secret.empty()) return;  // the children read it where this process did
  if (setenv("RDMAPS_SECRET", transport::random_secret().c_str(), 1) != 0)
    throw Error(Errc::kInternal, std::string("setting RDMAPS_SECRET for the child processes: ") + std::strerror(errno));
}

}  // namespace rdmaps::tools
