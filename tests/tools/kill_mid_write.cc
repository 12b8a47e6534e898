// kill_mid_write DIR PID [SECONDS]: waits until process PID creates a
// checkpoint's temporary file (*.ckpt.tmp) in DIR, stops it at once, and
// SIGKILLs it if the file is still unfinished (not yet renamed): a server
// killed in the middle of writing a checkpoint. Exits 0 after such a kill,
// 1 if none happened within SECONDS (default 30).
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: kill_mid_write DIR PID [SECONDS]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const pid_t pid = static_cast<pid_t>(std::atoi(argv[2]));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(argc > 3 ? std::atoi(argv[3]) : 30);
  const int fd = inotify_init1(IN_CLOEXEC);
  if (fd < 0 || inotify_add_watch(fd, dir.c_str(), IN_CREATE) < 0) {
    std::perror(("kill_mid_write: watching " + dir).c_str());
    return 2;
  }
  alignas(inotify_event) char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = read(fd, buf, sizeof(buf));
    for (ssize_t at = 0; at < n;) {
      const auto* e = reinterpret_cast<const inotify_event*>(buf + at);
      at += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
      const std::string name = e->len ? e->name : "";
      if (name.size() < 9 || name.compare(name.size() - 9, 9, ".ckpt.tmp") != 0) continue;
      if (kill(pid, SIGSTOP) != 0) {
        std::perror("kill_mid_write: SIGSTOP");
        return 2;
      }
      struct stat st {};
      if (stat((dir + "/" + name).c_str(), &st) == 0) {
        kill(pid, SIGKILL);
        std::printf("killed %d while it wrote %s (%lld bytes so far)\n", static_cast<int>(pid), name.c_str(),
                    static_cast<long long>(st.st_size));
        return 0;
      }
      kill(pid, SIGCONT);  // it finished before it stopped: try the next one
    }
  }
  std::fprintf(stderr, "kill_mid_write: no checkpoint write of %d caught in %s\n", static_cast<int>(pid), dir.c_str());
  return 1;
}
