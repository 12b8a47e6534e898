#include "rdmaps/log.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "rdmaps/error.h"

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

struct Sink {
  std::mutex mutex;  // one line at a time, whoever the sink is
  LogSink sink;
};
Sink& sink() {
  static Sink s;
  return s;
}

}  // namespace

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

void set_log_sink(LogSink s) {
  std::lock_guard<std::mutex> lock(sink().mutex);
  sink().sink = std::move(s);
}

void set_log_level(LogLevel level) { threshold().store(static_cast<int>(level), std::memory_order_relaxed); }

LogLevel log_level() { return static_cast<LogLevel>(threshold().load(std::memory_order_relaxed)); }

bool log_enabled(LogLevel level) {
  return level != LogLevel::kOff && static_cast<int>(level) >= threshold().load(std::memory_order_relaxed);
}

void log(LogLevel level, const std::string& line) {
  if (!log_enabled(level)) return;
  Sink& s = sink();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.sink) {
    try {
      s.sink(level, line);
      return;
    } catch (...) {
      // A sink that throws must not take a server thread down; the line goes to stderr.
    }
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
