// The line a server logs every --stats-interval: what happened in the
// interval (rates, the staleness of the pushes it applied, what it dropped or
// rejected), beside the few figures only known since the start.
#pragma once

#include <cstddef>
#include <string>

#include "rdmaps/server.h"

namespace rdmaps::ps {

/// From two snapshots `seconds` apart: `now` and the one before (`last`).
std::string interval_report(const ServerStats& now, const ServerStats& last, double seconds, size_t lanes);

}  // namespace rdmaps::ps
