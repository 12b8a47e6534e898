#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "cuda/staging.h"
#include "cuda/status.h"
#include "rdmaps/error.h"

namespace rdmaps::cuda {

struct StagingRing::Impl {
  cudaStream_t stream = nullptr;
  std::vector<void*> buffers;
  std::vector<cudaEvent_t> events;
  ~Impl() {
    for (cudaEvent_t e : events) cudaEventDestroy(e);
    for (void* b : buffers) cudaFreeHost(b);
    if (stream) cudaStreamDestroy(stream);
  }
};

StagingRing::StagingRing(size_t chunk_bytes, int depth)
    : impl_(std::make_unique<Impl>()), chunk_bytes_(chunk_bytes), depth_(depth) {
  if (depth < 1 || chunk_bytes == 0) throw Error(Errc::kInvalidArgument, "staging ring needs depth >= 1 and chunks");
  check(cudaStreamCreateWithFlags(&impl_->stream, cudaStreamNonBlocking), "stream for staging");
  for (int k = 0; k < depth; ++k) {
    void* b = nullptr;
    check(cudaHostAlloc(&b, chunk_bytes, cudaHostAllocDefault), "pinned staging buffer");
    impl_->buffers.push_back(b);
    cudaEvent_t e;
    check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "staging event");
    impl_->events.push_back(e);
  }
}

StagingRing::~StagingRing() = default;

void* StagingRing::buffer(int k) const { return impl_->buffers.at(static_cast<size_t>(k)); }
void* StagingRing::stream() const { return impl_->stream; }

void StagingRing::copy_from_device(int k, const void* device_src, size_t bytes) {
  if (bytes > chunk_bytes_)
    throw Error(Errc::kOutOfBounds,
                "staging " + std::to_string(bytes) + " bytes into chunks of " + std::to_string(chunk_bytes_));
  check_copy(cudaMemcpyAsync(buffer(k), device_src, bytes, cudaMemcpyDeviceToHost, impl_->stream), bytes, device_src,
             buffer(k), "staging copy");
  check(cudaEventRecord(impl_->events.at(static_cast<size_t>(k)), impl_->stream), "event record");
}

bool StagingRing::ready(int k) {
  const cudaError_t err = cudaEventQuery(impl_->events.at(static_cast<size_t>(k)));
  if (err == cudaErrorNotReady) {
    // The runtime keeps it as this thread's last error, which the next kernel
    // launch's check then reported as its own failure ("device not ready").
    (void)cudaGetLastError();
    return false;
  }
  check(err, "staging query");
  return true;
}

void StagingRing::wait(int k) { check(cudaEventSynchronize(impl_->events.at(static_cast<size_t>(k))), "staging wait"); }

void StagingRing::copy_to_device(void* device_dst, const void* host_src, size_t bytes) {
  check_copy(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, impl_->stream), bytes, host_src,
             device_dst);
  check_copy(cudaStreamSynchronize(impl_->stream), bytes, host_src, device_dst, "waiting for the copy");
}

}  // namespace rdmaps::cuda
