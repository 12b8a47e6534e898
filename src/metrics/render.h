// What a server's and a worker's /metrics say (docs/observability.md lists
// every metric): Prometheus text rendered from one stats snapshot.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rdmaps/client.h"
#include "rdmaps/server.h"

namespace rdmaps::metrics {

/// Upper bounds of the staleness histogram's buckets; each is exact from
/// ServerStats::staleness, whose last bucket is open.
const std::vector<double>& staleness_bounds();

std::string render_server_metrics(const ServerStats& stats, const ServerOptions& options);
std::string render_worker_metrics(const ClientStats& stats, uint32_t worker, uint64_t clock);

}  // namespace rdmaps::metrics
