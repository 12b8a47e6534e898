#include "transport/ucx/log_filter.h"

#include <ucs/debug/log_def.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "rdmaps/log.h"

namespace rdmaps::transport::ucx {

namespace {

ucs_log_func_rc_t downgrade_flush_errors(const char* file, unsigned line, const char*, ucs_log_level_t level,
                                         const ucs_log_component_config_t*, const char* format, va_list ap) {
  if (level != UCS_LOG_LEVEL_ERROR || std::strstr(format, "error during flush") == nullptr)
    return UCS_LOG_FUNC_RC_CONTINUE;
  if (log_enabled(LogLevel::kDebug)) {
    char text[256];
    va_list copy;
    va_copy(copy, ap);
    std::vsnprintf(text, sizeof(text), format, copy);
    va_end(copy);
    logf(LogLevel::kDebug, "rdmaps: ucx (%s:%u): %s", file, line, text);
  }
  return UCS_LOG_FUNC_RC_STOP;
}

}  // namespace

void install_log_filter_once() {
  static std::once_flag once;
  std::call_once(once, [] { ucs_log_push_handler(downgrade_flush_errors); });
}

}  // namespace rdmaps::transport::ucx
