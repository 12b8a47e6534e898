// The one place UCX status codes become rdmaps errors.
#pragma once

#include <ucs/type/status.h>

#include <string>
#include <string_view>

#include "rdmaps/error.h"

namespace rdmaps::transport::ucx {

Errc errc_from(ucs_status_t status) noexcept;
/// UCX's description plus what to check, e.g. UCX_TLS for an unreachable peer.
std::string explain(ucs_status_t status);
/// Error naming the operation, where it happened and UCX's reason.
Error error_from(ucs_status_t status, std::string_view op, std::string_view where);
inline void check(ucs_status_t status, std::string_view op, std::string_view where) {
  if (status != UCS_OK) throw error_from(status, op, where);
}

}  // namespace rdmaps::transport::ucx
