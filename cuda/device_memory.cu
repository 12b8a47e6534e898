#include <cuda_runtime.h>

#include <string>

#include "cuda/device_memory.h"
#include "rdmaps/error.h"

namespace rdmaps::cuda {
namespace {

void check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) throw Error(Errc::kInternal, "CUDA " + what + ": " + cudaGetErrorString(err));
}

}  // namespace

bool is_device_pointer(const void* p) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();  // host memory unknown to CUDA (or no driver): clear the sticky error
    return false;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

int device_of(const void* p) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device : -1;
}

void use_device(int device) {
  int current = -1;
  check(cudaGetDevice(&current), "current device");
  if (current != device) check(cudaSetDevice(device), "set device " + std::to_string(device));
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  cudaError_t err = cudaMalloc(&ptr_, bytes ? bytes : 1);
  if (err != cudaSuccess)
    throw Error(err == cudaErrorMemoryAllocation ? Errc::kNoMemory : Errc::kUnsupported,
                "cudaMalloc of " + std::to_string(bytes) + " bytes: " + cudaGetErrorString(err));
}

DeviceBuffer::~DeviceBuffer() { cudaFree(ptr_); }

void DeviceBuffer::upload(const void* host, size_t bytes) {
  if (bytes > bytes_)
    throw Error(Errc::kOutOfBounds, "upload of " + std::to_string(bytes) + " bytes into " + std::to_string(bytes_));
  check(cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice), "copy to the device");
}

void DeviceBuffer::download(void* host, size_t bytes) const {
  if (bytes > bytes_)
    throw Error(Errc::kOutOfBounds, "download of " + std::to_string(bytes) + " bytes from " + std::to_string(bytes_));
  check(cudaMemcpy(host, ptr_, bytes, cudaMemcpyDeviceToHost), "copy from the device");
}

void DeviceBuffer::fill_bytes(int value) { check(cudaMemset(ptr_, value, bytes_), "memset"); }

PinnedBuffer::PinnedBuffer(size_t bytes) {
  check(cudaHostAlloc(&ptr_, bytes ? bytes : 1, cudaHostAllocDefault), "pinned allocation of " + std::to_string(bytes));
}

PinnedBuffer::~PinnedBuffer() { cudaFreeHost(ptr_); }

void synchronize() { check(cudaDeviceSynchronize(), "synchronize"); }

void synchronize(void* stream) {
  check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "stream synchronize");
}

void copy_to_device(void* dst, const void* host_src, size_t bytes) {
  check(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice), "copy to the device");
}

void copy_to_host(void* host_dst, const void* src, size_t bytes) {
  check(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost), "copy from the device");
}

void copy_device(void* dst, const void* src, size_t bytes, void* stream) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream)),
        "device-to-device copy");
}

double elapsed_ms_between_events(void (*body)(void*), void* arg, int iters) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "event");
  check(cudaEventCreate(&stop), "event");
  // Every step checked: a failed one gave 0 ms, and the benchmark reported infinite GB/s.
  check(cudaEventRecord(start), "timing: record the start");
  for (int i = 0; i < iters; ++i) body(arg);
  check(cudaEventRecord(stop), "timing: record the end");
  check(cudaEventSynchronize(stop), "timing");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, start, stop), "timing: elapsed time");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms;
}

}  // namespace rdmaps::cuda
