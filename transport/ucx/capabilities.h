// What UCX moves: its version and the memory types its transports handle
// (ucp_context_query), and from those whether device pointers may go to it.
// UCX's own facts (which releases handle GPU memory safely) live here, not in
// the parameter server.
#pragma once

#include <ucp/api/ucp.h>

#include <string>
#include <vector>

#include "transport/context.h"

namespace rdmaps::transport::ucx {

/// UCX releases before this crash on put/get from GPU memory.
constexpr unsigned kGpuSafeMajor = 1, kGpuSafeMinor = 16;

/// What UCX `major.minor.release`, whose transports handle `memory_types`,
/// does with CUDA device pointers.
MemorySupport judge_memory_support(unsigned major, unsigned minor, unsigned release,
                                   std::vector<std::string> memory_types);
/// The answer of a live UCX context.
MemorySupport query_memory_support(ucp_context_h context);
/// The answer of a short-lived context made from the UCX_* environment, with
/// UCX_TLS as `kind` selects.
MemorySupport probe_memory_support(TransportKind kind);

}  // namespace rdmaps::transport::ucx
