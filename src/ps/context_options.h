// The transport context a server, its lanes and a worker make from the job's
// Config: one place, so that every side gets every setting.
#pragma once

#include <chrono>
#include <string>
#include <utility>

#include "rdmaps/config.h"
#include "transport/context.h"

namespace rdmaps::ps {

/// `loopback_only`: every peer is on this host (ContextOptions::loopback_only).
inline transport::ContextOptions context_options(const Config& config, std::string name, bool loopback_only = false) {
  transport::ContextOptions o;
  o.transport = transport::parse_transport(config.transport);
  o.name = std::move(name);
  o.loopback_only = loopback_only;
  o.secret = config.secret;
  o.peer_silence = std::chrono::milliseconds(config.peer_timeout_ms);
  return o;
}

}  // namespace rdmaps::ps
