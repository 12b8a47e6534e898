// This process's pid, for objects that must not be used by a forked child
// (their connections and threads are the parent's).
#pragma once

#include <sys/types.h>

namespace rdmaps::transport {

/// getpid() without a system call per call (glibc does not cache it: one per
/// push of 4096 small tensors cost 1.37x): read once, and again in every
/// forked child by an atfork handler.
pid_t this_process_id();

}  // namespace rdmaps::transport
