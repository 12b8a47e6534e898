// A rank of a job on this host, as the rdmaps launcher's variables place it
// (rendezvous at 127.0.0.1:port): what the rendezvous tests and its fuzz target start from.
#pragma once

#include <cstdint>

#include "src/launch/placement.h"

namespace rdmaps::test {

inline launch::Placement local_rank(uint32_t rank, uint32_t world, uint32_t servers, uint16_t port) {
  launch::Placement p;
  p.rank = rank;
  p.world_size = world;
  p.num_servers = servers;
  p.source = "rdmaps";
  p.rank_var = "RDMAPS_RANK";
  p.master_addr = "127.0.0.1";
  p.master_port = port;
  return p;
}

}  // namespace rdmaps::test
