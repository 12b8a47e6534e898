#include "rdmaps/log.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <utility>

#include "rdmaps/error.h"
#include "src/api/log_sink.h"
#include "src/api/utf8.h"

namespace rdmaps {
namespace {

// The threshold from RDMAPS_LOG_LEVEL, read once; a bad value is said once
// and the default kept, since a log setting should never stop a server.
LogLevel initial_level() {
  const char* text = std::getenv("RDMAPS_LOG_LEVEL");
  if (!text || !*text) return LogLevel::kInfo;
  try {
    return parse_log_level(text, "RDMAPS_LOG_LEVEL");
  } catch (const Error& e) {
    std::fprintf(stderr, "rdmaps: %s; logging at info\n", e.what());
    return LogLevel::kInfo;
  }
}

std::atomic<int>& threshold() {
  static std::atomic<int> level{static_cast<int>(initial_level())};
  return level;
}

// The installed sink is called outside `swap`, so a sink may replace itself
// and a sink that takes a lock of its own (Python's GIL) cannot deadlock with
// a thread that holds that lock and logs. `calls` keeps the header's "one call
// at a time" for the sinks that are promised it.
struct Installed {
  LogSink call;
  bool serialized;
};
struct Sink {
  std::mutex swap;
  std::shared_ptr<const Installed> current;
  std::mutex calls;
};
Sink& sink() {
  static Sink s = [] {
    // A child forked while another thread held these (writing a line in a
    // sink) would wait for that thread, which it does not have, at its first
    // line or set_log_sink(): fresh ones there, the only thread being the child's.
    pthread_atfork(nullptr, nullptr, [] {
      new (&sink().swap) std::mutex;
      new (&sink().calls) std::mutex;
    });
    return Sink{};
  }();
  return s;
}
// A sink that logs gets its own lines on stderr instead of waiting for itself.
thread_local bool in_sink = false;

void install(LogSink call, bool serialized) {
  auto next = call ? std::make_shared<const Installed>(Installed{std::move(call), serialized}) : nullptr;
  Sink& s = sink();
  std::shared_ptr<const Installed> old;
  {
    std::lock_guard<std::mutex> lock(s.swap);
    old = std::exchange(s.current, std::move(next));
  }
  // What the caller frees after this returns (a C callback's user data) is
  // no longer in use: a serialized call of the old sink has ended. A sink that
  // replaces itself is that call.
  if (!in_sink) {
    std::lock_guard<std::mutex> wait(s.calls);
  }
}

std::shared_ptr<const Installed> installed() {
  std::lock_guard<std::mutex> lock(sink().swap);
  return sink().current;
}

// False where the line is for stderr: no sink, or one that threw (a sink
// must not take a server thread down).
bool to_sink(LogLevel level, const std::string& line) noexcept {
  try {
    for (;;) {
      auto to = installed();
      if (!to) return false;
      if (!to->serialized) {
        to->call(level, line);
        return true;
      }
      std::lock_guard<std::mutex> one_at_a_time(sink().calls);
      // A sink replaced while this thread waited is not called: install()
      // returned once the calls that began before it ended.
      if (installed() != to) continue;
      to->call(level, line);
      return true;
    }
  } catch (...) {
    return false;
  }
}

}  // namespace

bool in_log_sink() { return in_sink; }

const char* log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
    case LogLevel::kOff:
      return "off";
  }
  return "?";
}

LogLevel parse_log_level(const std::string& text, const std::string& source) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError, LogLevel::kOff})
    if (text == log_level_name(l)) return l;
  throw Error(Errc::kInvalidArgument, source + ": '" + text + "' is not debug, info, warn, error or off");
}

void set_log_sink(LogSink s) { install(std::move(s), true); }

void set_concurrent_log_sink(LogSink s) { install(std::move(s), false); }

void set_log_level(LogLevel level) { threshold().store(static_cast<int>(level), std::memory_order_relaxed); }

LogLevel log_level() { return static_cast<LogLevel>(threshold().load(std::memory_order_relaxed)); }

bool log_enabled(LogLevel level) {
  return level != LogLevel::kOff && static_cast<int>(level) >= threshold().load(std::memory_order_relaxed);
}

void log(LogLevel level, const std::string& text) {
  if (!log_enabled(level)) return;
  // One line per call, whatever a peer put in it (a tensor name, a rank's
  // launch id); bytes that are not UTF-8 also made Python's sink drop the line.
  const std::string line = one_line(text);
  if (!in_sink) {
    in_sink = true;
    const bool taken = to_sink(level, line);
    in_sink = false;
    if (taken) return;
  }
  std::fprintf(stderr, "%s\n", line.c_str());
}

void logf(LogLevel level, const char* format, ...) {
  if (!log_enabled(level)) return;
  va_list args;
  va_start(args, format);
  char small[512];
  const int n = std::vsnprintf(small, sizeof(small), format, args);
  va_end(args);
  if (n < 0) return;
  if (static_cast<size_t>(n) < sizeof(small)) return log(level, small);
  std::string big(static_cast<size_t>(n) + 1, '\0');
  va_start(args, format);
  std::vsnprintf(big.data(), big.size(), format, args);
  va_end(args);
  big.resize(static_cast<size_t>(n));
  log(level, big);
}

}  // namespace rdmaps
