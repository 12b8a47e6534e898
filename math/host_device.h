// Marks functions that CUDA kernels and host code share, so one definition
// serves both (the CPU tests then exercise the kernels' arithmetic too).
#pragma once

#if defined(__CUDACC__)
#define RDMAPS_HOST_DEVICE __host__ __device__
#else
#define RDMAPS_HOST_DEVICE
#endif
