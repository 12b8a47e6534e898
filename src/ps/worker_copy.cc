#include "src/ps/worker_copy.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "rdmaps/error.h"

namespace rdmaps::ps {

namespace {
size_t page_size() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// Pieces of this size go to the threads of fault_in().
constexpr size_t kFaultChunk = size_t{32} << 20;
constexpr size_t kHugePage = size_t{2} << 20;  // x86-64, and most arm64 kernels

void fault_in_piece(char* p, size_t bytes) {
  // The kernel maps and zeroes every page in one call, far cheaper than a
  // fault per page where it really does so (bare metal). Older kernels
  // refuse the advice: the writes below fault the pages in alone.
#ifdef MADV_POPULATE_WRITE
  madvise(p, bytes, MADV_POPULATE_WRITE);
#endif
  // Populating is not always faulting in: under a hypervisor that backs guest
  // memory lazily, pages the guest kernel knows to be zero are mapped without
  // being written, and the first write still faults in the host (0.6 s per
  // 256 MB on the 2-core VM of docs/benchmarks.md, after a 0.1 s populate).
  // A write per page takes that fault here; where populate did fault them
  // in, it costs a store per page. Zero stays zero.
  volatile char* bytes_of = p;
  for (size_t at = 0, page = page_size(); at < bytes; at += page) bytes_of[at] = 0;
}
}  // namespace

HostPages::HostPages(size_t bytes) {
  if (bytes == 0) throw Error(Errc::kInvalidArgument, "cannot map 0 bytes");
  const size_t page = page_size();
  const size_t mapped = (bytes + page - 1) / page * page;
  // Large ones start on a huge-page boundary, so that the kernel can back
  // them with transparent huge pages where it is asked to (below).
  const size_t slack = mapped >= kHugePage ? kHugePage : 0;
  void* p = mmap(nullptr, mapped + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw Error(Errc::kNoMemory, "mapping " + std::to_string(bytes) + " bytes failed: " + std::strerror(errno));
  char* start = static_cast<char*>(p);
  if (slack) {
    char* aligned = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(p) + kHugePage - 1) & ~(kHugePage - 1));
    if (aligned > start) munmap(start, aligned - start);
    if (aligned + mapped < start + mapped + slack) munmap(aligned + mapped, start + slack - aligned);
    start = aligned;
    // Huge pages: the copy is faulted in whole, so they cost no memory, and
    // on the 2-core VM faulting in 256 MB took 13-21 ms in them instead of
    // 0.56-0.74 s in 4 KiB pages (unmapping it 1 ms instead of 19-41), as
    // UCX asks for them for what it allocates itself (its "thp" method).
    // Only asked for: with THP "never" or absent this fails, and 4 KiB pages
    // serve as well, only slower to fault in.
    madvise(start, mapped, MADV_HUGEPAGE);
  }
  data_ = start;
  size_ = bytes;
  mapped_ = mapped;
}

void discard_pages(void* p, size_t bytes) noexcept {
  const uintptr_t page = page_size();
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(page - 1);
  if (end <= begin) return;
  // Not huge pages any more: khugepaged filled a discarded span that asked
  // for them with zeroed huge pages again, and a server whose tcp workers
  // were killed mid-push grew by 1.2 MB per kill for good.
  madvise(reinterpret_cast<void*>(begin), end - begin, MADV_NOHUGEPAGE);
  // Shared memory (UCX's posix allocation, the default transport's) keeps its
  // pages through MADV_DONTNEED: only a hole punched in it frees them. Private
  // memory refuses that (EINVAL) and goes by MADV_DONTNEED.
  if (madvise(reinterpret_cast<void*>(begin), end - begin, MADV_REMOVE) != 0)
    madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void fault_in(std::span<HostPages> pages, unsigned threads) {
  struct Piece {
    char* p;
    size_t bytes;
  };
  std::vector<Piece> pieces;
  for (const HostPages& h : pages)
    for (size_t at = 0; h && at < h.mapped(); at += kFaultChunk)
      pieces.push_back({static_cast<char*>(h.data()) + at, std::min(kFaultChunk, h.mapped() - at)});
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < pieces.size();)
      fault_in_piece(pieces[i].p, pieces[i].bytes);
  };
  std::vector<std::jthread> helpers;
  const size_t wanted = std::min<size_t>(std::max(threads, 1u), pieces.size());
  try {
    for (size_t t = 1; t < wanted; ++t) helpers.emplace_back(work);
  } catch (const std::system_error&) {
    // No thread to be had: fewer of them fault the rest.
  }
  work();
}

HostPages::~HostPages() {
  if (data_) munmap(data_, mapped_);
}

HostPages::HostPages(HostPages&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapped_(std::exchange(other.mapped_, 0)) {}

HostPages& HostPages::operator=(HostPages&& other) noexcept {
  if (this != &other) {
    if (data_) munmap(data_, mapped_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mapped_ = std::exchange(other.mapped_, 0);
  }
  return *this;
}

void CopyHandoff::offer(uint64_t token, std::vector<HostPages> copies) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    token_ = token;
    copies_.swap(copies);
  }
  // `copies` now holds the earlier ticket's leftovers: unmapped here, outside
  // the lock, so that a lane taking its copy never waits on it.
}

HostPages CopyHandoff::take(uint64_t token, uint32_t lane) {
  std::lock_guard<std::mutex> lock(mu_);
  if (token == 0 || token != token_ || lane >= copies_.size()) return {};
  return std::move(copies_[lane]);
}

void CopyHandoff::drop() {
  std::vector<HostPages> untaken;
  {
    std::lock_guard<std::mutex> lock(mu_);
    copies_.swap(untaken);
  }
}

size_t CopyHandoff::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& c : copies_) n += c ? 1 : 0;
  return n;
}

void MemoryToFree::add(HostPages pages) noexcept {
  if (!pages) return;
  try {
    std::lock_guard<std::mutex> lock(mu_);
    pages_.push_back(std::move(pages));
    any_.store(true, std::memory_order_release);
  } catch (...) {
    // No room to queue it (or no lock): `pages` is unmapped on this thread instead.
  }
}

void MemoryToFree::free_all() {
  if (!any_.load(std::memory_order_acquire)) return;
  std::vector<HostPages> pages;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pages.swap(pages_);
    any_.store(false, std::memory_order_relaxed);
  }
}

WorkerCopy::WorkerCopy(transport::Context& context, HostPages memory, size_t bytes, MemoryToFree& free_later)
    : memory_(std::move(memory)), free_later_(&free_later) {
  try {
    if (bytes > memory_.size())
      throw Error(Errc::kOutOfBounds, "a copy of " + std::to_string(bytes) + " bytes in " +
                                          std::to_string(memory_.size()) + " bytes of memory");
    region_ = context.register_memory(memory_.data(), bytes, transport::Access::kNone);
  } catch (...) {
    free_later.add(std::move(memory_));
    throw;
  }
}

WorkerCopy::~WorkerCopy() {
  region_.reset();  // deregistered while the memory is still there
  free_later_->add(std::move(memory_));
}

}  // namespace rdmaps::ps
