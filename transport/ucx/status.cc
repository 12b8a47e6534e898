#include "transport/ucx/status.h"

#include "transport/file_limit.h"

namespace rdmaps::transport::ucx {

Errc errc_from(ucs_status_t status) noexcept {
  switch (status) {
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
    case UCS_ERR_BUFFER_TOO_SMALL:
    case UCS_ERR_OUT_OF_RANGE:
      return Errc::kInvalidArgument;
    case UCS_ERR_TIMED_OUT:
      return Errc::kTimeout;
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_NO_DEVICE:
    case UCS_ERR_REJECTED:
    case UCS_ERR_BUSY:
      return Errc::kUnreachable;
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_CANCELED:
    case UCS_ERR_ENDPOINT_TIMEOUT:  // the endpoint failed: its peer died or can no longer be reached
      return Errc::kPeerGone;
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_EXCEEDS_LIMIT:
      return Errc::kNoMemory;
    case UCS_ERR_UNSUPPORTED:
    case UCS_ERR_NOT_IMPLEMENTED:
      return Errc::kUnsupported;
    case UCS_ERR_IO_ERROR:
      return Errc::kIo;
    default:
      return Errc::kInternal;
  }
}

std::string explain(ucs_status_t status) {
  std::string text = ucs_status_string(status);
  switch (status) {
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_NO_DEVICE:
      return text +
             " (no UCX transport reaches the peer: check UCX_TLS / UCX_NET_DEVICES, and that "
             "the peer listens on that address)";
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
      return text + " (nobody accepts connections there: is the server running on that port?)";
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
      return text + " (the peer process died or its network went away)";
    case UCS_ERR_SHMEM_SEGMENT:
      return text + " (a peer's shared memory could not be reached: did its process exit?)";
    case UCS_ERR_NO_MEMORY:
      return text + " (registration may exceed the locked-memory limit: check `ulimit -l`)";
    case UCS_ERR_UNSUPPORTED:
      return text + " (the selected UCX transports cannot do this: check UCX_TLS)";
    default:
      return text;
  }
}

Error error_from(ucs_status_t status, std::string_view op, std::string_view where) {
  std::string msg(op);
  if (!where.empty()) msg += std::string(" (") + std::string(where) + ")";
  return Error(errc_from(status), msg + ": " + explain(status) + open_files_hint());
}

}  // namespace rdmaps::transport::ucx
