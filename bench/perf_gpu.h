// `rdmaps-perf gpu`: the GPU kernels' bandwidth against the device-to-device
// copy bandwidth measured in the same run, and staged pushes from device
// memory against pushes from pinned host memory. Exits 77 where no GPU is.
#pragma once

namespace rdmaps::bench {

int perf_gpu_main(int argc, char** argv, int first);

}  // namespace rdmaps::bench
