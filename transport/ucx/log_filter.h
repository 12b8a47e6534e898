// UCX 1.13 prints "UCX ERROR ... error during flush: Endpoint timeout" to
// stderr whenever it flushes an endpoint whose peer already left and
// peer-failure handling is off (our default, for speed: transport/context.h).
// Closing the endpoint of a worker that just left does that on every tcp run.
// Such a flush either belongs to a close, where the peer is gone by design,
// or to a request whose failure rdmaps reports itself with the peer named, so
// the line goes to rdmaps' log at debug level; every other UCX line is UCX's.
#pragma once

namespace rdmaps::transport::ucx {

/// Once per process, before the first UCX context.
void install_log_filter_once();

}  // namespace rdmaps::transport::ucx
