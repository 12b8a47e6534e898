// What the metrics endpoint answers to one HTTP request head (request line
// and headers): the whole reply, status line to body. The endpoint never reads
// a request body and closes every connection after its reply, so the head is
// all it needs.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace rdmaps::metrics {

/// Largest request head (request line and headers) the endpoint takes in.
inline constexpr size_t kMaxRequestHead = 8192;
/// Largest body a request may announce; it is never read, only discarded.
inline constexpr size_t kMaxRequestBody = 4096;

/// The reply to `head` (up to, not including, the blank line that ends it):
/// a body announced past kMaxRequestBody or of unknown length 413, a
/// malformed head 400, HTTP other than 1.x 505, a path other than /metrics
/// 404, a method other than GET or HEAD 405; else 200 with `render()` (500
/// with its message where it throws). Headers such as Range are ignored.
std::string reply_to(std::string_view head, const std::function<std::string()>& render);

/// The reply to `head`, which did not end within kMaxRequestHead bytes (431; no body to a HEAD).
std::string reply_to_oversized_head(std::string_view head);

}  // namespace rdmaps::metrics
