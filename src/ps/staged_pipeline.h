// The order of a staged push (docs/cluster.md, the GPU paths' table):
// pieces copied from the device into a ring of pinned buffers and sent from
// there, copies and sends overlapping.
#pragma once

#include <algorithm>
#include <cstddef>

namespace rdmaps::ps {

/// Of a ring of `depth` buffers, how many are filled ahead of the piece being
/// sent; the others hold sends in flight. A chunk's copy from the device (PCIe
/// or NVLink-C2C, tens of GB/s) takes a fraction of its send over tcp (a few
/// GB/s): a quarter of the ring, at least one buffer, keeps the sender fed,
/// and the rest lets that many sends overlap. Filling all but one ahead left
/// one send in flight whatever the depth: the buffer refilled next was the
/// one just sent from.
constexpr size_t staged_ahead(int depth) { return depth < 2 ? 0 : static_cast<size_t>(std::max(1, depth / 4)); }

/// Drives `n` pieces through a ring of `depth` buffers, piece i in buffer
/// i % depth: `release(b)` waits until the sends that read buffer b have
/// completed, `stage(i)` then fills it with piece i, and `send(i)` posts piece
/// i from it. `sent` counts the pieces posted, as far as it got when one of
/// the calls throws.
template <class Release, class Stage, class Send>
void run_staged(size_t n, int depth, Release&& release, Stage&& stage, Send&& send, size_t& sent) {
  const size_t ahead = staged_ahead(depth), ring = static_cast<size_t>(std::max(depth, 1));
  const auto fill = [&](size_t i) {
    release(i % ring);
    stage(i);
  };
  sent = 0;
  for (size_t i = 0; i < ahead && i < n; ++i) fill(i);
  for (; sent < n; ++sent) {
    if (sent + ahead < n) fill(sent + ahead);
    send(sent);
  }
}

}  // namespace rdmaps::ps
