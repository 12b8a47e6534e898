#include "rdmaps/error.h"

namespace rdmaps {

const char* errc_name(Errc code) noexcept {
  switch (code) {
    case Errc::kInvalidArgument:
      return "invalid-argument";
    case Errc::kPermissionDenied:
      return "permission-denied";
    case Errc::kOutOfBounds:
      return "out-of-bounds";
    case Errc::kTimeout:
      return "timeout";
    case Errc::kUnreachable:
      return "unreachable";
    case Errc::kPeerGone:
      return "peer-gone";
    case Errc::kProtocol:
      return "protocol";
    case Errc::kNoMemory:
      return "no-memory";
    case Errc::kUnsupported:
      return "unsupported";
    case Errc::kIo:
      return "io";
    case Errc::kInternal:
      return "internal";
    case Errc::kCancelled:
      return "cancelled";
    case Errc::kRefusedForNow:
      return "refused-for-now";
  }
  return "unknown";
}

}  // namespace rdmaps
