#include "src/tools/stop_on_signal.h"

#include <atomic>
#include <csignal>
#include <thread>

namespace rdmaps::tools {
namespace {
// One per process: the signal has no other way to reach it. Atomic: the
// handler runs on whichever thread the signal lands on.
std::atomic<Server*> g_server{nullptr};
std::atomic<int> g_taken{0};
std::atomic<int> g_in_handler{0};  // handlers that may hold g_server: ~StopOnSignal waits them out
static_assert(std::atomic<Server*>::is_always_lock_free && std::atomic<int>::is_always_lock_free);
void on_signal(int signal) {
  g_taken.store(signal);
  g_in_handler.fetch_add(1);  // before the load: the destructor's null store then sees it (both seq_cst)
  if (Server* server = g_server.load()) server->stop();  // only sets a flag: safe in a handler
  g_in_handler.fetch_sub(1);
}
}  // namespace

StopOnSignal::StopOnSignal(Server& server) {
  g_taken = 0;
  g_server = &server;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

int StopOnSignal::taken() const { return g_taken.load(); }

// A handler on another thread that loaded the server before it was cleared
// may still be calling stop(): the server is destroyed right after this, so
// it is waited for (a repeated SIGTERM during shutdown read a freed server).
StopOnSignal::~StopOnSignal() {
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  g_server = nullptr;
  while (g_in_handler.load() != 0) std::this_thread::yield();
}

}  // namespace rdmaps::tools
