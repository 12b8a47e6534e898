#include "src/tools/stop_on_signal.h"

#include <atomic>
#include <csignal>

namespace rdmaps::tools {
namespace {
// One per process: the signal has no other way to reach it. Atomic: the
// handler runs on whichever thread the signal lands on.
std::atomic<Server*> g_server{nullptr};
std::atomic<int> g_taken{0};
static_assert(std::atomic<Server*>::is_always_lock_free && std::atomic<int>::is_always_lock_free);
void on_signal(int signal) {
  g_taken.store(signal);
  if (Server* server = g_server.load()) server->stop();  // only sets a flag: safe in a handler
}
}  // namespace

StopOnSignal::StopOnSignal(Server& server) {
  g_taken = 0;
  g_server = &server;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

int StopOnSignal::taken() const { return g_taken.load(); }

StopOnSignal::~StopOnSignal() {
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  g_server = nullptr;
}

}  // namespace rdmaps::tools
