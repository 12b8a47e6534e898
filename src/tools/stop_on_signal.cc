#include "src/tools/stop_on_signal.h"

#include <csignal>

namespace rdmaps::tools {
namespace {
Server* g_server = nullptr;  // one per process: the signal has no other way to reach it
void on_signal(int) {
  if (g_server) g_server->stop();  // only sets a flag: safe in a handler
}
}  // namespace

StopOnSignal::StopOnSignal(Server& server) {
  g_server = &server;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

StopOnSignal::~StopOnSignal() {
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  g_server = nullptr;
}

}  // namespace rdmaps::tools
