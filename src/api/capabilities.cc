#include "src/api/capabilities.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "rdmaps/version.h"
#include "src/launch/pmix_exchange.h"

namespace rdmaps {
namespace {

bool module_loaded(const char* name) {
  struct stat st {};
  return stat((std::string("/sys/module/") + name).c_str(), &st) == 0;
}

const char* dmabuf_text(int v) { return v > 0 ? "yes" : v == 0 ? "no" : "unknown"; }

}  // namespace

const char* gpu_path_name(GpuPath path) {
  switch (path) {
    case GpuPath::kNone:
      return "none";
    case GpuPath::kDirect:
      return "direct";
    case GpuPath::kStaged:
      return "staged";
  }
  return "?";
}

GpuPath choose_gpu_path(const transport::MemorySupport& transport, int gpus, std::string* reason,
                        GpuPathChoice choice) {
  auto say = [&](const std::string& why) {
    if (reason) *reason = why;
  };
  if (gpus == 0) {
    say("no CUDA device");
    return GpuPath::kNone;
  }
  if (choice == GpuPathChoice::kStaged) {
    say("--gpu-path staged: staging through pinned host buffers");
    return GpuPath::kStaged;
  }
  if (!transport.device_memory) {
    say(transport.device_note + ": staging through pinned host buffers");
    return GpuPath::kStaged;
  }
  say(transport.device_note + ": device pointers go to " + transport.backend);
  return GpuPath::kDirect;
}

Capabilities probe_capabilities() {
  Capabilities caps;
  caps.transport = transport::probe_memory_support();
  caps.rdma = transport::probe_rdma_devices();
  caps.gpu = cuda::probe_gpus();
  caps.nvidia_peermem = module_loaded("nvidia_peermem") || module_loaded("nv_peer_mem");
  caps.gpu_path = choose_gpu_path(caps.transport, caps.gpu.device_count(), &caps.gpu_path_reason);
  caps.pmix = launch::have_pmix();
  return caps;
}

std::string describe(const Capabilities& c) {
  std::ostringstream o;
  o << c.transport.backend << " " << c.transport.version << ", memory types:";
  for (const auto& m : c.transport.memory_types) o << ' ' << m;
  if (!c.transport.error.empty()) o << " (query failed: " << c.transport.error << ")";
  o << "\nRDMA devices:";
  if (c.rdma.ports.empty()) o << " none (" << c.rdma.note << ")";
  for (const auto& p : c.rdma.ports) {
    char speed[32];
    std::snprintf(speed, sizeof speed, "%.0f Gb/s", p.gbps);
    o << "\n  " << p.device << " port " << p.port << ": " << p.link_layer << ", " << p.state << ", " << speed;
  }
  o << "\nCUDA: ";
  if (!c.gpu.built_with_cuda) {
    o << c.gpu.reason;
  } else {
    o << "runtime " << c.gpu.runtime_version << ", driver " << c.gpu.driver_version << ", " << c.gpu.device_count()
      << " device(s)";
    if (c.gpu.devices.empty()) o << " (" << c.gpu.reason << ")";
  }
  for (const auto& d : c.gpu.devices)
    o << "\n  " << d.index << ": " << d.name << ", sm_" << d.major << d.minor << ", " << (d.memory_bytes >> 20)
      << " MiB, PCI " << d.pci_bus_id << ", dma-buf " << dmabuf_text(d.dmabuf);
  o << "\nGPUDirect RDMA: nvidia_peermem " << (c.nvidia_peermem ? "loaded" : "not loaded") << ", ibv_reg_dmabuf_mr "
    << (c.rdma.dmabuf_api ? "available" : "not available");
  o << "\nGPU path: " << gpu_path_name(c.gpu_path) << " (" << c.gpu_path_reason << ")";
  // Which way a launched job's ranks meet: a PMIx failure (a container without the host's PMIx server) said nothing of
  // it.
  o << "\nLaunchers: PMIx "
    << (c.pmix ? "yes (mpirun and srun --mpi=pmix ranks exchange addresses through the launcher's store)"
               : "no (built without libpmix: launched ranks meet at the rendezvous, MASTER_ADDR)");
  return o.str();
}

std::string to_json(const Capabilities& c) {
  using Json = nlohmann::ordered_json;
  const auto& types = c.transport.memory_types;
  Json ports = Json::array();
  for (const auto& p : c.rdma.ports)
    ports.push_back(
        {{"device", p.device}, {"port", p.port}, {"link_layer", p.link_layer}, {"state", p.state}, {"gbps", p.gbps}});
  Json devices = Json::array();
  for (const auto& d : c.gpu.devices)
    devices.push_back({{"index", d.index},
                       {"name", d.name},
                       {"compute_capability", std::to_string(d.major) + "." + std::to_string(d.minor)},
                       {"memory_bytes", d.memory_bytes},
                       {"pci_bus_id", d.pci_bus_id},
                       {"dmabuf", dmabuf_text(d.dmabuf)}});
  // "ucx" and its fields are the names scripts already read.
  Json out = {{"ucx",
               {{"version", c.transport.version},
                {"memory_types", types},
                {"cuda", std::find(types.begin(), types.end(), "cuda") != types.end()},
                {"error", c.transport.error}}},
              {"rdma",
               {{"built_with_verbs", c.rdma.built_with_verbs},
                {"dmabuf_api", c.rdma.dmabuf_api},
                {"note", c.rdma.note},
                {"ports", ports}}},
              {"cuda",
               {{"built_with_cuda", c.gpu.built_with_cuda},
                {"runtime_version", c.gpu.runtime_version},
                {"driver_version", c.gpu.driver_version},
                {"reason", c.gpu.reason},
                {"devices", devices}}},
              {"nvidia_peermem", c.nvidia_peermem},
              {"gpu_path", gpu_path_name(c.gpu_path)},
              {"gpu_path_reason", c.gpu_path_reason},
              {"pmix", c.pmix}};
  // Which build answered: builds of one release differ in their commit.
  out["rdmaps"] = {
      {"version", rdmaps_build_version()}, {"abi", rdmaps_abi_version()}, {"library", rdmaps_library_path()}};
  return out.dump();
}

std::string summary(const Capabilities& c) {
  std::ostringstream o;
  o << c.transport.backend << " " << c.transport.version << " (";
  if (!c.transport.error.empty()) {
    o << "does not start: " << c.transport.error;  // a banner of "( memory)" hid it
  } else {
    for (size_t i = 0; i < c.transport.memory_types.size(); ++i) o << (i ? "," : "") << c.transport.memory_types[i];
    o << " memory";
  }
  o << "), RDMA ports " << c.rdma.ports.size() << ", CUDA devices " << c.gpu.device_count() << ", GPU path "
    << gpu_path_name(c.gpu_path);
  return o.str();
}

}  // namespace rdmaps
