// UCX handles as unique_ptrs with their destroy functions.
#pragma once

#include <ucp/api/ucp.h>

#include <memory>
#include <type_traits>

namespace rdmaps::transport::ucx {

template <auto Destroy>
struct Deleter {
  template <typename T>
  void operator()(T* handle) const noexcept {
    Destroy(handle);
  }
};

using ConfigPtr = std::unique_ptr<std::remove_pointer_t<ucp_config_t*>, Deleter<ucp_config_release>>;
using ContextPtr = std::unique_ptr<std::remove_pointer_t<ucp_context_h>, Deleter<ucp_cleanup>>;
using WorkerPtr = std::unique_ptr<std::remove_pointer_t<ucp_worker_h>, Deleter<ucp_worker_destroy>>;
using ListenerPtr = std::unique_ptr<std::remove_pointer_t<ucp_listener_h>, Deleter<ucp_listener_destroy>>;
using RkeyPtr = std::unique_ptr<std::remove_pointer_t<ucp_rkey_h>, Deleter<ucp_rkey_destroy>>;

}  // namespace rdmaps::transport::ucx
