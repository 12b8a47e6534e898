// What the UCX library in use can do: its version and the memory types its
// transports handle (ucp_context_query), which decides whether GPU buffers may
// go to UCX directly.
#pragma once

#include <string>
#include <vector>

namespace rdmaps::transport::ucx {

struct UcxCapabilities {
  unsigned major = 0, minor = 0, release = 0;
  std::vector<std::string> memory_types;  ///< "host", "cuda", "cuda-managed", ...
  bool cuda = false;                      ///< a transport handles CUDA device memory
  std::string error;                      ///< why the query failed, if it did
  std::string version() const;
  bool at_least(unsigned maj, unsigned min) const { return major > maj || (major == maj && minor >= min); }
};

/// Queries a short-lived UCX context made from the UCX_* environment.
UcxCapabilities query_capabilities();

}  // namespace rdmaps::transport::ucx
