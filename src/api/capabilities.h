// The machine's capabilities as rdmaps uses them (UCX memory types, RDMA
// ports, CUDA devices, peer-memory support) and the GPU data path they allow.
// rdmaps-info prints them; servers and benchmarks print the summary line.
#pragma once

#include <string>

#include "cuda/gpu_probe.h"
#include "rdmaps/config.h"
#include "transport/context.h"
#include "transport/rdma_devices.h"

namespace rdmaps {

/// How gradients in GPU memory reach the wire.
enum class GpuPath {
  kNone,    ///< no CUDA device
  kDirect,  ///< device pointers go to UCX (GPUDirect RDMA where the HCA allows)
  kStaged,  ///< copied through pinned host buffers in pipelined chunks
};
const char* gpu_path_name(GpuPath path);

struct Capabilities {
  transport::MemorySupport transport;  ///< what the default transport configuration moves
  transport::RdmaReport rdma;
  cuda::GpuInfo gpu;
  bool nvidia_peermem = false;  ///< nvidia_peermem (or nv_peer_mem) kernel module loaded
  GpuPath gpu_path = GpuPath::kNone;
  std::string gpu_path_reason;
  /// Built with libpmix: ranks of mpirun and srun --mpi=pmix exchange addresses
  /// through the launcher's PMIx store; without it, through the rendezvous.
  bool pmix = false;
};

/// The path for these facts: direct only where the transport takes device pointers.
GpuPath choose_gpu_path(const transport::MemorySupport& transport, int gpus, std::string* reason,
                        GpuPathChoice choice = GpuPathChoice::kAuto);

Capabilities probe_capabilities();
std::string describe(const Capabilities& caps);  ///< several lines, for people
std::string to_json(const Capabilities& caps);   ///< one object
std::string summary(const Capabilities& caps);   ///< one line, for start-up banners

}  // namespace rdmaps
