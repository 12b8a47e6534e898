#include "src/ps/refusal_log.h"

#include "rdmaps/log.h"

namespace rdmaps::ps {

void RefusalLog::flush() {
  if (unlogged_ == 0 || std::chrono::steady_clock::now() - window_ < std::chrono::seconds(1)) return;
  logf(LogLevel::kWarn, "%s: %llu more %s within that second (not logged one by one)", who_.c_str(),
       static_cast<unsigned long long>(unlogged_), what_.c_str());
  unlogged_ = 0;
}

void RefusalLog::warn(const std::string& line) {
  constexpr uint32_t kLinesPerSecond = 10;
  const auto now = std::chrono::steady_clock::now();
  if (now - window_ >= std::chrono::seconds(1)) {
    flush();
    window_ = now;
    logged_ = 0;
    unlogged_ = 0;
  }
  if (logged_++ < kLinesPerSecond)
    log(LogLevel::kWarn, who_ + ": " + line);  // whole: `line` may quote a peer's NUL
  else
    ++unlogged_;
}

}  // namespace rdmaps::ps
