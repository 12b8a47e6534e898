// What a server did, as the line rdmaps-server and rdmaps-train --role
// server end with says it (one wording: rdmaps-train's left out pulls,
// clocks and the pushes dropped above --tau-max).
#pragma once

#include <string>

#include "rdmaps/server.h"

namespace rdmaps::tools {

/// "N pushes, N pulls, N clocks, N rejected, N dropped, longest set-up pause
/// X ms, resumed with N updates, N checkpoints (the newest holds N updates)".
std::string server_done(const ServerStats& s);

}  // namespace rdmaps::tools
