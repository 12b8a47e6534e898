// Open files. A server holds a few per worker and lane (the bootstrap socket,
// UCX's sockets or shared-memory segments: measured 1.5 per worker and lane
// over tcp, 2 over shared memory), so the usual soft limit of 1024 ends a
// server of 16 lanes near 20 workers, while the hard limit is usually far
// higher: servers and many-client processes take it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace rdmaps::transport {

struct FileLimit {
  uint64_t soft = 0, hard = 0;
};

/// Raises this process's soft limit on open files to its hard limit; returns
/// the limits now in force.
FileLimit raise_open_file_limit() noexcept;

/// Open files a server needs for `workers` workers on `lanes` lanes, with a
/// margin: 3 per worker and lane, and 64 for everything else.
uint64_t server_files_needed(uint64_t workers, uint64_t lanes);

/// Descriptors this process has open now (its limit when none is left to
/// list them with), or nothing where /proc/self/fd cannot be read.
std::optional<uint64_t> open_file_count();

/// "; this process has N of its M allowed open files open (ulimit -n)..."
/// when it is that close to the limit (UCX then fails with bare I/O errors),
/// else "". For error messages; reads /proc/self/fd.
std::string open_files_hint();

/// How to give a process more open files than its hard limit allows.
inline constexpr const char* kRaiseHardFileLimit =
    "raise the hard limit (ulimit -Hn as root, /etc/security/limits.conf, LimitNOFILE= in systemd)";

/// What to tell the user when `limit` is too low for that server, or nothing.
std::optional<std::string> file_limit_warning(uint64_t workers, uint64_t lanes, FileLimit limit);

}  // namespace rdmaps::transport
