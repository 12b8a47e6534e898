// RDMA devices and ports as libibverbs sees them (name, link layer, state,
// speed), for the capability report; empty where verbs is absent.
#pragma once

#include <string>
#include <vector>

namespace rdmaps::transport {

struct RdmaPort {
  std::string device;      ///< e.g. mlx5_0
  int port = 0;            ///< 1-based
  std::string link_layer;  ///< InfiniBand, Ethernet (RoCE)
  std::string state;       ///< ACTIVE, DOWN, ...
  double gbps = 0;         ///< active width x speed, Gb/s
};

struct RdmaReport {
  bool built_with_verbs = false;
  std::vector<RdmaPort> ports;
  std::string note;         ///< why there are none, when there are none
  bool dmabuf_api = false;  ///< ibv_reg_dmabuf_mr present (rdma-core >= 34)
};

RdmaReport probe_rdma_devices();

}  // namespace rdmaps::transport
