// A client's and a server's counters as the dicts rdmaps.Worker.stats() and
// rdmaps.Server.stats() return (docs/pytorch.md names the keys).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "rdmaps/client.h"
#include "rdmaps/server.h"

namespace rdmaps::python {

pybind11::dict client_stats_dict(const ClientStats& s, uint64_t messages_rejected);
pybind11::dict server_stats_dict(const ServerStats& s);

}  // namespace rdmaps::python
