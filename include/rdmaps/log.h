// Where the library's messages go: one leveled logger for every layer
// (docs/observability.md "Logs"). Lines go to stderr by default, at info and
// above; RDMAPS_LOG_LEVEL (debug, info, warn, error, off) sets the threshold,
// and a trainer that embeds rdmaps can take the lines itself.
#pragma once

#include <functional>
#include <string>

namespace rdmaps {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };
/// "debug", "info", "warn", "error", "off".
const char* log_level_name(LogLevel level);
/// Throws Error(kInvalidArgument) naming `source` on anything but those names.
LogLevel parse_log_level(const std::string& text, const std::string& source);

/// Receives each line that passes the threshold, from any library thread,
/// one call at a time. It may call set_log_sink(); what it logs itself goes
/// to stderr.
using LogSink = std::function<void(LogLevel level, const std::string& line)>;
/// Replaces where lines go; an empty sink restores stderr. On return the old
/// sink is no longer being called (unless this is called from inside it).
void set_log_sink(LogSink sink);
void set_log_level(LogLevel level);
LogLevel log_level();

/// Writes `line` if `level` passes the threshold (what the library calls),
/// its control characters (a peer's NUL, newline or escape) and bytes that
/// are not UTF-8 as '?'.
void log(LogLevel level, const std::string& line);
/// log() with a printf format (no trailing newline).
void logf(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));
bool log_enabled(LogLevel level);

}  // namespace rdmaps
