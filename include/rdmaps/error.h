// rdmaps error type: every failure the library reports, with what failed,
// where, and what to do about it in what().
#pragma once

#include <stdexcept>
#include <string>

namespace rdmaps {

/// What kind of failure an Error is; callers branch on this, people read what().
enum class Errc {
  kInvalidArgument,   ///< a caller passed something unusable (size, offset, flag)
  kPermissionDenied,  ///< the operation needs rights the region was not given
  kOutOfBounds,       ///< an access falls outside a registered region
  kTimeout,           ///< a bounded wait ran out
  kUnreachable,       ///< no transport reaches the peer, or nobody listens there
  kPeerGone,          ///< the peer failed or closed; recreate the connection
  kProtocol,     ///< a peer sent something malformed, or a server refused this worker for good (the message says why)
  kNoMemory,     ///< allocation or registration failed
  kUnsupported,  ///< the transport or build cannot do this
  kIo,           ///< a file or socket operation failed
  kInternal,     ///< anything else the transport reported
  kCancelled,    ///< Client::interrupt() ended the call
  /// A server refused this worker for now (no memory for it yet, its id's
  /// earlier connection still open, the server stopping or its job over):
  /// a later connect() may pass; the message says why.
  kRefusedForNow,
};

/// Short stable name of an error kind ("timeout", "peer-gone", ...).
const char* errc_name(Errc code) noexcept;

/// The exception rdmaps throws; what() names the operation, the peer and a hint.
class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& what) : std::runtime_error(what), code_(code) {}
  Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

}  // namespace rdmaps
