#include "transport/rdma_devices.h"

#include <memory>

#include "rdmaps_config.h"

#if RDMAPS_HAVE_VERBS
#include <infiniband/verbs.h>
#endif

namespace rdmaps::transport {

#if RDMAPS_HAVE_VERBS
namespace {

// IB spec encodings of ibv_port_attr::active_width and ::active_speed.
int lanes(uint8_t width) {
  switch (width) {
    case 1:
      return 1;
    case 2:
      return 4;
    case 4:
      return 8;
    case 8:
      return 12;
    case 16:
      return 2;
    default:
      return 0;
  }
}

double lane_gbps(uint8_t speed) {
  switch (speed) {
    case 1:
      return 2.5;
    case 2:
      return 5.0;
    case 4:
      return 10.0;
    case 8:
      return 10.3125;
    case 16:
      return 14.0625;
    case 32:
      return 25.78125;
    case 64:
      return 50.0;
    case 128:
      return 100.0;
    default:
      return 0;
  }
}

}  // namespace

RdmaReport probe_rdma_devices() {
  RdmaReport report;
  report.built_with_verbs = true;
  report.dmabuf_api = true;  // the header we built against declares ibv_reg_dmabuf_mr
  int count = 0;
  ibv_device** list = ibv_get_device_list(&count);
  if (!list || count == 0) {
    report.note = "libibverbs finds no RDMA device (no HCA, or its kernel driver is not loaded)";
    if (list) ibv_free_device_list(list);
    return report;
  }
  // Freed and closed on every path (out of memory growing the report too).
  const std::unique_ptr<ibv_device*, void (*)(ibv_device**)> devices(list, &ibv_free_device_list);
  for (int i = 0; i < count; ++i) {
    const char* name = ibv_get_device_name(list[i]);
    const std::unique_ptr<ibv_context, int (*)(ibv_context*)> ctx(ibv_open_device(list[i]), &ibv_close_device);
    if (!ctx) {
      report.ports.push_back({name, 0, "?", "cannot open the device", 0});
      continue;
    }
    ibv_device_attr dev{};
    if (ibv_query_device(ctx.get(), &dev) == 0) {
      for (int p = 1; p <= dev.phys_port_cnt; ++p) {
        ibv_port_attr attr{};
        if (ibv_query_port(ctx.get(), static_cast<uint8_t>(p), &attr) != 0) continue;
        RdmaPort port;
        port.device = name;
        port.port = p;
        port.link_layer = attr.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet (RoCE)" : "InfiniBand";
        port.state = ibv_port_state_str(attr.state);
        port.gbps = lanes(attr.active_width) * lane_gbps(attr.active_speed);
        report.ports.push_back(port);
      }
    }
  }
  return report;
}
#else
RdmaReport probe_rdma_devices() {
  RdmaReport report;
  report.note = "built without libibverbs (meson -Dverbs=disabled, or libibverbs-dev missing)";
  return report;
}
#endif

}  // namespace rdmaps::transport
