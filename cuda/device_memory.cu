#include <cuda_runtime.h>

#include <string>

#include "cuda/device_memory.h"
#include "cuda/driver_pointer.h"
#include "cuda/status.h"
#include "rdmaps/error.h"

namespace rdmaps::cuda {
namespace {

// An event destroyed however its timing ends.
struct Event {
  cudaEvent_t event = nullptr;
  Event() { check(cudaEventCreate(&event), "event"); }
  ~Event() { cudaEventDestroy(event); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

}  // namespace

bool is_device_pointer(const void* p) { return device_of(p) >= 0; }

int device_of(const void* p) {
  // The driver first: it makes no context (cuda/driver_pointer.h). Only once
  // something loaded it, as a CPU build asks: device memory cannot exist
  // before, and loading it (cuInit) at the first push of host memory stalled
  // on a node of GPUs without persistence mode and left no CUDA to a child forked after.
  if (const DriverAnswer a = ask_driver(p, false); a.known) return a.device;
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device : -1;
}

int current_device() {
  int current = -1;
  check(cudaGetDevice(&current), "current device");
  return current;
}

void use_device(int device) {
  if (current_device() != device) check(cudaSetDevice(device), "set device " + std::to_string(device));
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  cudaError_t err = cudaMalloc(&ptr_, bytes ? bytes : 1);
  if (err != cudaSuccess) {
    cudaGetLastError();  // as check(): not the next launch's error
    throw Error(err == cudaErrorMemoryAllocation ? Errc::kNoMemory : Errc::kUnsupported,
                "cudaMalloc of " + std::to_string(bytes) + " bytes: " + cudaGetErrorString(err));
  }
}

DeviceBuffer::~DeviceBuffer() { cudaFree(ptr_); }

void DeviceBuffer::upload(const void* host, size_t bytes) {
  if (bytes > bytes_)
    throw Error(Errc::kOutOfBounds, "upload of " + std::to_string(bytes) + " bytes into " + std::to_string(bytes_));
  check_copy(cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice), bytes, host, ptr_);
}

void DeviceBuffer::download(void* host, size_t bytes) const {
  if (bytes > bytes_)
    throw Error(Errc::kOutOfBounds, "download of " + std::to_string(bytes) + " bytes from " + std::to_string(bytes_));
  check_copy(cudaMemcpy(host, ptr_, bytes, cudaMemcpyDeviceToHost), bytes, ptr_, host);
}

void DeviceBuffer::fill_bytes(int value) { check(cudaMemset(ptr_, value, bytes_), "memset"); }

void DeviceBuffer::fill_bytes(int value, void* stream) {
  check(cudaMemsetAsync(ptr_, value, bytes_, static_cast<cudaStream_t>(stream)), "memset on a stream");
}

PinnedBuffer::PinnedBuffer(size_t bytes) {
  check(cudaHostAlloc(&ptr_, bytes ? bytes : 1, cudaHostAllocDefault), "pinned allocation of " + std::to_string(bytes));
}

PinnedBuffer::~PinnedBuffer() { cudaFreeHost(ptr_); }

void synchronize(const char* after) { check(cudaDeviceSynchronize(), std::string("synchronize after ") + after); }

void synchronize(void* stream, const char* after) {
  check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), std::string("stream synchronize after ") + after);
}

void copy_to_device(void* dst, const void* host_src, size_t bytes) {
  check_copy(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice), bytes, host_src, dst);
}

void copy_to_host(void* host_dst, const void* src, size_t bytes) {
  check_copy(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost), bytes, src, host_dst);
}

void copy_device(void* dst, const void* src, size_t bytes, void* stream) {
  check_copy(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream)), bytes, src,
             dst, "device-to-device copy");
}

double elapsed_ms_between_events(void (*body)(void*), void* arg, int iters) {
  Event start, stop;
  // Every step checked: a failed one gave 0 ms, and the benchmark reported infinite GB/s.
  check(cudaEventRecord(start.event), "timing: record the start");
  for (int i = 0; i < iters; ++i) body(arg);
  check(cudaEventRecord(stop.event), "timing: record the end");
  check(cudaEventSynchronize(stop.event), "timing");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, start.event, stop.event), "timing: elapsed time");
  return ms;
}

}  // namespace rdmaps::cuda
