#include "src/tools/child_process.h"

#include <poll.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>

#include "rdmaps/error.h"
#include "transport/auth.h"

extern char** environ;

namespace rdmaps::tools {

namespace {
constexpr char kParentPid[] = "RDMAPS_PARENT_PID";

// This process's environment plus RDMAPS_PARENT_PID=<this pid>, for a child.
std::vector<std::string> child_environment() {
  std::vector<std::string> env;
  const std::string prefix = std::string(kParentPid) + "=";
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, prefix.c_str(), prefix.size()) != 0) env.emplace_back(*e);
  env.push_back(prefix + std::to_string(getpid()));
  return env;
}
}  // namespace

Child spawn_self(const std::string& program, std::vector<std::string> args) {
  int fds[2];
  if (pipe(fds) != 0) throw Error(Errc::kIo, "pipe() for a child process");
  args.insert(args.begin(), program);
  args.push_back("--report-fd");
  args.push_back(std::to_string(fds[1]));
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = child_environment();
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  Child child;
  int rc = posix_spawn(&child.pid, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data());
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    throw Error(Errc::kIo, std::string("starting a child process: ") + std::strerror(rc));
  }
  child.read_fd = fds[0];
  return child;
}

void end_with_parent(const char* program) {
  const char* text = std::getenv(kParentPid);
  if (!text || !*text) return;  // set but empty is unset, as every RDMAPS_ variable
  char* end = nullptr;
  errno = 0;
  const long parsed = std::strtol(text, &end, 10);
  // Unchecked, "abc" was parent 0, "gone", and the program exited naming no variable.
  if (*end || errno || parsed <= 0 || parsed > std::numeric_limits<pid_t>::max()) {
    std::fprintf(stderr,
                 "%s: error: RDMAPS_PARENT_PID='%s' is not a process id (the variable is the program's own, "
                 "set for the processes it starts: unset it)\n",
                 program, text);
    std::_Exit(1);
  }
  const auto parent = static_cast<pid_t>(parsed);
  unsetenv(kParentPid);  // not for this process's own children: spawn_self names itself
  // SIGTERM's default action ends the process; shared-memory files do not
  // outlive it (UCX unlinks them, or the next rdmaps process sweeps them).
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0)
    std::fprintf(stderr, "%s: cannot ask to end with the parent process (%s)\n", program, std::strerror(errno));
  // The parent may have died before the request: then nobody will signal us.
  if (getppid() != parent) {
    std::fprintf(stderr, "%s: the parent process %d is gone; exiting\n", program, static_cast<int>(parent));
    std::_Exit(1);
  }
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

namespace {
// A status from waitpid() as wait_child() returns and words it.
int exit_code(int status, std::string* how) {
  if (WIFEXITED(status)) {
    if (how) *how = "exited with status " + std::to_string(WEXITSTATUS(status)) + "; its error is above";
    return WEXITSTATUS(status);
  }
  if (how)
    *how = "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) +
           (WTERMSIG(status) == SIGKILL ? "; by hand, or by the kernel out of memory: see dmesg" : "") + ")";
  return 128 + WTERMSIG(status);
}
}  // namespace

int wait_child(Child& child, std::string* how) {
  if (child.read_fd >= 0) close(child.read_fd);
  child.read_fd = -1;
  if (child.pid <= 0) return 0;
  int status = 0;
  waitpid(child.pid, &status, 0);
  child.pid = -1;
  return exit_code(status, how);
}

std::optional<size_t> first_failed(const std::vector<Child*>& children, std::chrono::milliseconds within,
                                   std::string* how) {
  for (auto until = std::chrono::steady_clock::now() + within;;) {
    for (size_t i = 0; i < children.size(); ++i) {
      Child& child = *children[i];
      int status = 0;
      if (child.pid <= 0 || waitpid(child.pid, &status, WNOHANG) != child.pid) continue;
      child.pid = -1;
      if (exit_code(status, how) != 0) return i;
    }
    if (std::chrono::steady_clock::now() >= until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::vector<std::string> read_all_or_fail(std::vector<Child>& children,
                                          const std::function<std::string(size_t, const std::string&)>& blame) {
  std::vector<std::string> out(children.size());
  std::vector<Child*> all;
  for (auto& c : children) all.push_back(&c);
  std::vector<bool> open(children.size(), true);
  for (size_t left = children.size(); left > 0;) {
    std::vector<pollfd> fds;
    std::vector<size_t> which;
    for (size_t i = 0; i < children.size(); ++i)
      if (open[i]) {
        fds.push_back({children[i].read_fd, POLLIN, 0});
        which.push_back(i);
      }
    ::poll(fds.data(), fds.size(), 100);
    for (size_t k = 0; k < fds.size(); ++k) {
      if (!fds[k].revents) continue;
      char buf[4096];
      const ssize_t got = read(fds[k].fd, buf, sizeof(buf));
      if (got > 0) {
        out[which[k]].append(buf, static_cast<size_t>(got));
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        open[which[k]] = false;
        --left;
      }
    }
    std::string how;
    if (auto i = first_failed(all, std::chrono::milliseconds(0), &how)) throw Error(Errc::kInternal, blame(*i, how));
  }
  return out;
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
