// Device memory and the few runtime calls rdmaps needs around it, behind
// plain C++ so that callers compile without CUDA headers. A CPU build answers
// "no device" and throws kUnsupported on allocation.
#pragma once

#include <cstddef>
#include <type_traits>

namespace rdmaps::cuda {

/// True when `p` points into CUDA device (or managed) memory.
bool is_device_pointer(const void* p);
/// The GPU that holds device (or managed) memory at `p`; -1 for host memory.
int device_of(const void* p);
/// Makes `device` this thread's current GPU, where the next allocations,
/// streams and kernels go (a new thread's is GPU 0, whatever its tensors').
void use_device(int device);
/// This thread's current GPU.
int current_device();

/// A device allocation, freed on destruction.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }
  void upload(const void* host, size_t bytes);
  void download(void* host, size_t bytes) const;
  void fill_bytes(int value);  ///< poison before a test run
  /// Queued on `stream`: what runs after it there sees the bytes set, and
  /// nothing else waits (the first bf16 push waited for the whole backward).
  void fill_bytes(int value, void* stream);

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

/// Page-locked host memory (cudaHostAlloc), freed on destruction.
class PinnedBuffer {
 public:
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void* data() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
};

/// Waits for all queued device work; throws with the CUDA error, saying it
/// came `after` that work (a kernel's fault surfaces here, not at its launch).
void synchronize(const char* after = "the queued device work");
/// Waits for the work queued on `stream` only.
void synchronize(void* stream, const char* after);
/// Synchronous copies between host and device memory.
void copy_to_device(void* dst, const void* host_src, size_t bytes);
void copy_to_host(void* host_dst, const void* src, size_t bytes);
/// Queues a device-to-device copy.
void copy_device(void* dst, const void* src, size_t bytes, void* stream = nullptr);
/// Milliseconds `iters` runs of body(arg) take on the default stream (CUDA events).
double elapsed_ms_between_events(void (*body)(void*), void* arg, int iters);
/// The same for a callable.
template <typename F>
double time_ms(F&& f, int iters);

template <typename F>
double time_ms(F&& f, int iters) {
  using Body = std::remove_reference_t<F>;
  return elapsed_ms_between_events([](void* p) { (*static_cast<Body*>(p))(); }, &f, iters);
}

}  // namespace rdmaps::cuda
