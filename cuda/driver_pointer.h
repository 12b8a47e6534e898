// Where memory lies, asked of the CUDA driver (libcuda, opened at run time so
// that a CPU build and a machine without a driver load). Not the runtime's
// cudaPointerGetAttributes: that makes the calling thread's current GPU's
// primary context first (GPU 0 on a new thread: a few hundred MiB there for
// every rank of a node whose communication thread asks), and the driver
// answers from the process's unified address space without one.
#pragma once

namespace rdmaps::cuda {

struct DriverAnswer {
  bool known = false;    ///< false: the driver could not say (the caller may ask the runtime)
  int device = -1;       ///< the GPU holding device or managed memory; -1: host memory
  bool managed = false;  ///< managed memory (cudaMallocManaged): the CPU may read it too
};

/// `open_driver`: load libcuda if this process has not. Both builds pass
/// false and ask only once something else loaded it (the CUDA runtime,
/// torch): no CUDA memory exists in a process without the driver, and
/// neither initialises a driver of its own for it. Host memory for sure
/// then, and where the driver has no device.
DriverAnswer ask_driver(const void* p, bool open_driver);

}  // namespace rdmaps::cuda
