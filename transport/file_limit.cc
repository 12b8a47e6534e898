#include "transport/file_limit.h"

#include <sys/resource.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

namespace rdmaps::transport {

FileLimit raise_open_file_limit() noexcept {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return {};
  if (r.rlim_cur < r.rlim_max) {
    rlimit raised = r;
    raised.rlim_cur = r.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) r = raised;
  }
  return {static_cast<uint64_t>(r.rlim_cur), static_cast<uint64_t>(r.rlim_max)};
}

std::optional<uint64_t> open_file_count() {
  std::error_code ec;
  uint64_t open = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != std::filesystem::end(it);
       it.increment(ec))
    ++open;
  // Listing them takes a file too: none left means every one is open.
  if (ec == std::errc::too_many_files_open) {
    rlimit r{};
    if (getrlimit(RLIMIT_NOFILE, &r) != 0) return std::nullopt;
    return static_cast<uint64_t>(r.rlim_cur);
  }
  if (ec) return std::nullopt;
  return open;
}

std::string open_files_hint() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return "";
  const std::optional<uint64_t> open = open_file_count();
  if (!open || *open + 16 < r.rlim_cur) return "";
  return "; this process has " + std::to_string(*open) + " of its " + std::to_string(r.rlim_cur) +
         " allowed open files open: raise the limit (ulimit -n; hard limit " + std::to_string(r.rlim_max) + ")";
}

uint64_t server_files_needed(uint64_t workers, uint64_t lanes) { return 3 * workers * lanes + 64; }

std::optional<std::string> file_limit_warning(uint64_t workers, uint64_t lanes, FileLimit limit) {
  const uint64_t need = server_files_needed(workers, lanes);
  if (limit.soft == 0 || limit.soft == RLIM_INFINITY || need <= limit.soft) return std::nullopt;
  const uint64_t fit = limit.soft > 64 ? (limit.soft - 64) / (3 * std::max<uint64_t>(lanes, 1)) : 0;
  return std::to_string(workers) + " workers on " + std::to_string(lanes) + " lanes need about " +
         std::to_string(need) + " open files, but this process may open " + std::to_string(limit.soft) +
         " (ulimit -n; its hard limit is " + std::to_string(limit.hard) + "): workers past about " +
         std::to_string(fit) + " will fail to connect: " + kRaiseHardFileLimit +
         ", or run fewer lanes (--server-threads)";
}

}  // namespace rdmaps::transport
