#include "transport/process_id.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>

namespace rdmaps::transport {

namespace {
std::atomic<pid_t> g_pid{::getpid()};
}  // namespace

pid_t this_process_id() {
  static const bool watching =
      ::pthread_atfork(nullptr, nullptr, [] { g_pid.store(::getpid(), std::memory_order_relaxed); }) == 0;
  return watching ? g_pid.load(std::memory_order_relaxed) : ::getpid();
}

}  // namespace rdmaps::transport
