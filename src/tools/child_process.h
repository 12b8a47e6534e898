// Child processes of the tools (rdmaps-perf, rdmaps-train): the same binary
// in another role, reporting back through an inherited pipe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "rdmaps/config.h"

namespace rdmaps::tools {

struct Child {
  pid_t pid = -1;
  int read_fd = -1;  ///< what the child writes to the fd named by --report-fd
};

/// Runs this binary (named `program` in its argv[0]) with `args` plus "--report-fd N".
/// Call it from a thread that lives as long as the child should: the child
/// ends when that thread does (end_with_parent()).
Child spawn_self(const std::string& program, std::vector<std::string> args);
/// First thing in main(): a process started by spawn_self ends (SIGTERM) when
/// its parent does, killed or not, instead of running on as an orphan; any
/// other process returns at once. `program` names it in messages.
void end_with_parent(const char* program);
/// Reads exactly `n` bytes the child reported; throws Error naming `what` if it exits first.
void read_report(const Child& child, void* data, size_t n, const std::string& what);
/// Reads everything until the child closes its end.
std::string read_all(const Child& child);
/// Waits for the child; returns its exit status (128+signal when killed) and,
/// in `how`, says which ("exited with status 3; ...", "was killed by signal 9 ...").
int wait_child(Child& child, std::string* how = nullptr);
/// Waits up to `within` for one of `children` to end in failure: its index,
/// and in `how` what wait_child() says of it; nullopt if none did. A worker
/// that failed after its server died (with "peer gone") blames the server.
/// Leaves read_fd open: what a child wrote before it ended may be unread.
std::optional<size_t> first_failed(const std::vector<Child*>& children, std::chrono::milliseconds within,
                                   std::string* how);
/// Reads every child's reports to their end, all at once, and returns them
/// in order; throws Error(kInternal) with `blame(i, how)` as soon as child i
/// fails meanwhile (read one by one, the first child waited out its timeout
/// at a clock for a later one refused at once, and was blamed).
std::vector<std::string> read_all_or_fail(std::vector<Child>& children,
                                          const std::function<std::string(size_t, const std::string&)>& blame);
/// Writes to the fd named by --report-fd.
void report(int fd, const void* data, size_t n);
/// Local runs are authenticated too: unless the user gave a shared secret
/// (RDMAPS_SECRET or --secret-file), the children started after this call get
/// a fresh random one through RDMAPS_SECRET (docs/security.md).
void share_secret_with_children(const Config& config);

}  // namespace rdmaps::tools
