// A worker's copy of a lane's range (its write-back source and DC backup) and
// how its memory reaches the lane without the lane faulting it in: the
// control thread makes the memory when it admits the worker (HostPages),
// hands it over with the worker's ticket (CopyHandoff), the lane registers it
// (WorkerCopy), and what a lane lets go of goes back to the control thread to
// be unmapped (MemoryToFree). Faulting in its 128 MB range held a lane, and
// every other worker on it, for 0.43 s (docs/benchmarks.md "Joining without
// stalling the lanes"); none of this is on the data path.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "transport/context.h"

namespace rdmaps::ps {

/// Anonymous memory, page-aligned and zero. Its pages are faulted in on
/// first touch, or all at once by fault_in(): then whoever gets it next
/// writes to it without a page fault.
class HostPages {
 public:
  HostPages() = default;
  /// At least `bytes` (> 0), not yet faulted in; throws Error(kNoMemory) when the kernel refuses.
  explicit HostPages(size_t bytes);
  ~HostPages();
  HostPages(HostPages&& other) noexcept;
  HostPages& operator=(HostPages&& other) noexcept;
  HostPages(const HostPages&) = delete;
  HostPages& operator=(const HostPages&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }      ///< bytes asked for
  size_t mapped() const { return mapped_; }  ///< whole pages
  explicit operator bool() const { return data_ != nullptr; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0, mapped_ = 0;
};

/// Faults in every page of `pages` (the empty ones skipped), on up to
/// `threads` threads, the caller's included: a worker's copies for T lanes,
/// faulted in by one thread, would take T times as long as the T lanes took
/// each faulting its own.
void fault_in(std::span<HostPages> pages, unsigned threads);

/// The inverse: the whole pages of [p, p + bytes) go back to the kernel; the
/// mapping stays, and a late read (a send UCX still drives) sees zeros.
void discard_pages(void* p, size_t bytes) noexcept;

/// The copies the control thread made for one worker id's lanes, waiting
/// there until the worker connects to each lane with the ticket they were
/// made for. At most one per lane: a new ticket's replace an old one's.
/// Locked: set-up only, never the data path.
class CopyHandoff {
 public:
  /// For ticket `token`: `copies[l]` for lane l, empty where it needs none.
  /// Whatever an earlier ticket left untaken is freed on the caller's thread.
  void offer(uint64_t token, std::vector<HostPages> copies);
  /// Lane `lane`'s copy, if `token` is the ticket offered last and the copy
  /// was not taken yet; empty otherwise.
  HostPages take(uint64_t token, uint32_t lane);
  /// Copies offered and not taken (what a worker that never reaches its lanes holds).
  size_t waiting() const;
  /// Frees the copies not taken (their worker is gone: one killed between
  /// two of its lanes left the other lanes' copies mapped until its id came
  /// back); a lane it reaches after all makes its own.
  void drop();

 private:
  mutable std::mutex mu_;
  uint64_t token_ = 0;
  std::vector<HostPages> copies_;
};

/// Memory the lanes let go of (a rejoining worker's former copy, a refused
/// worker's new one), unmapped by the control thread: unmapping 256 MB took
/// a lane 20-40 ms here.
class MemoryToFree {
 public:
  /// From any thread; never throws (where it cannot queue, it frees at once).
  void add(HostPages pages) noexcept;
  /// Frees everything added so far; one atomic load when nothing was.
  void free_all();

 private:
  std::mutex mu_;
  std::vector<HostPages> pages_;
  std::atomic<bool> any_{false};
};

/// A worker's copy on a lane: HostPages registered with the lane's context
/// (which is never touched from another thread, hence registered here, not
/// by the control thread). The registration goes before the memory, and the
/// memory goes to `free_later`.
class WorkerCopy {
 public:
  /// Registers the first `bytes` of `memory`; on failure the memory goes to `free_later` and this throws.
  WorkerCopy(transport::Context& context, HostPages memory, size_t bytes, MemoryToFree& free_later);
  ~WorkerCopy();
  WorkerCopy(const WorkerCopy&) = delete;
  WorkerCopy& operator=(const WorkerCopy&) = delete;

  float* floats() const { return static_cast<float*>(memory_.data()); }
  const transport::Region& region() const { return *region_; }

 private:
  HostPages memory_;
  MemoryToFree* free_later_;
  std::unique_ptr<transport::Region> region_;
};

}  // namespace rdmaps::ps
