// Fresh parameters, shard versions and the lane's mailbox, written by a
// server lane into a worker's receive region (docs/protocol.md "Write-back (pull)"). The
// sender is the lane's side: data, then a fence, then the mailbox by put, or
// the same bytes by active messages in order where UCX emulates RMA. The
// receiver is the worker's side of the active-message path: it publishes a
// mailbox only once every payload sent before it has landed.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "src/ps/am_ids.h"
#include "src/ps/protocol.h"
#include "transport/context.h"

namespace rdmaps::ps {

/// Active-message write-backs go in messages of whole shards of about this
/// size (at least one shard): UCX's ucp_am_bw over tcp peaks at 1 MiB
/// (docs/benchmarks.md). A put write-back is one put of the range pulled.
inline constexpr size_t kWriteBackChunkBytes = 1 << 20;

class WriteBackSender {
 public:
  /// `receive`: the worker's receive region, imported on `ep`; `mailbox_offset`:
  /// this lane's mailbox in it; `shards`: version words this lane may send,
  /// and at most that many send_params() per write-back; `landings`: the
  /// worker's memory pulls may be put into (put path only).
  WriteBackSender(transport::Context& context, transport::Endpoint& ep,
                  std::unique_ptr<transport::RemoteRegion> receive, uint64_t mailbox_offset, size_t shards, bool use_am,
                  std::vector<std::unique_ptr<transport::RemoteRegion>> landings = {});
  /// Sizes of the landing regions, in order: what check_slot() holds a pull to.
  std::span<const uint64_t> landing_bytes() const { return landing_bytes_; }
  /// The next landing region (memory the worker registered after connecting).
  void add_landing(std::unique_ptr<transport::RemoteRegion> landing) {
    landing_bytes_.push_back(landing->size());
    landings_.push_back(std::move(landing));
  }

  /// Puts `floats` parameters from `params` (in `source`, registered, unchanged
  /// until wait_sent()) at `offset` of the receive region, or with `landing`
  /// (SlotHeader::landing: 1 + index) of that landing region. A write-back
  /// may send its range in several calls, each starting while the ones
  /// before are in flight.
  void send_params(const float* params, size_t floats, const transport::Region& source, uint64_t offset,
                   uint32_t landing = 0);
  /// Ends it: `count` version words at `offset`, fenced before any later
  /// mailbox; after parameters put into a landing region, only once they
  /// are in place there (a flush: the transport may emulate those puts),
  /// which is not waited for: sending(), try_send_mailbox() and the waits
  /// below send them once it completed.
  void send_versions(const uint64_t* versions, size_t count, uint64_t offset);
  /// Waits until every buffer of the write-back sent may change (local
  /// completion); due before the next one, which reuses them.
  void wait_sent(std::chrono::milliseconds timeout);
  /// Whether the write-back's sends are still under way, without waiting: a
  /// worker that stopped reading holds them, and the lane serves the others
  /// meanwhile. Throws Error where one failed.
  bool sending();
  /// The lane's mailbox, after everything sent before it; its waits share
  /// `deadline` (`bound` the whole wait, as a timeout names it).
  void send_mailbox(const Mailbox& box, std::chrono::steady_clock::time_point deadline,
                    std::chrono::milliseconds bound);
  /// As send_mailbox(), without waiting: false, nothing sent, while the last
  /// one is still under way (its staging is reused). Throws Error where it failed.
  bool try_send_mailbox(const Mailbox& box);
  /// Waits until the last mailbox sent may change (local completion).
  void wait_mailbox_sent(std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds bound) {
    mailbox_.wait_until(deadline, bound, nullptr);
  }
  /// Whether it sends by active messages (tcp) rather than puts.
  bool use_am() const { return use_am_; }
  /// The worker is gone: its sends, not waited for. They read this sender's
  /// buffers until they end (Context::retire keeps it that long).
  std::vector<transport::Request> abandon();

 private:
  /// Posts the versions once their flush (if any) completed; false while it has not.
  bool flushed();
  uint64_t* staged_versions() {
    return reinterpret_cast<uint64_t*>(static_cast<uint8_t*>(outbox_->data()) + sizeof(Mailbox));
  }
  transport::Endpoint& ep_;
  std::unique_ptr<transport::RemoteRegion> receive_;
  std::vector<std::unique_ptr<transport::RemoteRegion>> landings_;
  std::vector<uint64_t> landing_bytes_;
  std::unique_ptr<transport::Region> outbox_;  // mailbox + versions staged for puts
  uint64_t mailbox_offset_;
  bool use_am_;
  bool landed_ = false;  // this write-back put parameters into a landing region
  // Its versions, staged in the outbox, wait for flush_ (send_versions()).
  struct Deferred {
    size_t count = 0;
    uint64_t offset = 0;
  } deferred_;
  transport::Request flush_;
  std::vector<transport::Request> data_;
  transport::Request mailbox_;
  // Headers of in-flight active messages (UCX 1.13 reads them until
  // completion): sized once for one message per shard and the versions, never
  // reallocated while any is in flight.
  std::vector<WriteBackHeader> data_headers_;
  WriteBackHeader mailbox_header_{};

  void post_mailbox(const Mailbox& box);
};

class WriteBackReceiver {
 public:
  /// Where a payload lands instead of the receive region; none: `region` null.
  struct Destination {
    transport::Region* region = nullptr;
    uint64_t offset = 0;
  };
  /// A write-back active message from this lane: a payload lands in
  /// `receive` at its offset, or where `elsewhere(offset, bytes)` says; a
  /// mailbox waits for publish().
  template <typename Elsewhere>
  void on_message(transport::Context& context, transport::AmMessage& m, transport::Region& receive,
                  Elsewhere&& elsewhere) {
    WriteBackHeader h;
    if (!parse(m, receive, h)) return;
    const Destination d = elsewhere(h.offset, uint64_t{m.length});
    transport::Region& into = d.region ? *d.region : receive;
    landings_.push_back(
        {context.am_receive(m, into, d.region ? d.offset : h.offset), h.offset, m.length, d.region != nullptr});
  }
  /// Reports each payload that landed since the last call as
  /// `landed(offset, bytes, elsewhere)`, then copies a waiting mailbox into place once
  /// every earlier payload landed; true if either happened.
  /// A receive that failed is thrown once the others were reported, and no
  /// mailbox is published after it (its pull's data never came).
  template <typename Landed>
  bool publish(transport::Region& receive, Landed&& landed) {
    const size_t before = landings_.size();
    std::optional<Error> failed;
    // Caught in the scan: thrown out of it, the list kept moved-from entries,
    // reported as landed on the next call.
    std::erase_if(landings_, [&](Landing& l) {
      try {
        if (!l.request.test()) return false;
      } catch (const Error& e) {
        if (!failed) failed = e;
        return true;
      }
      landed(l.offset, l.bytes, l.elsewhere);
      return true;
    });
    if (failed) {
      pending_.reset();
      broken_ = true;
      throw *failed;
    }
    return landings_.size() != before || publish_mailbox(receive);
  }
  /// The lane is gone: its payloads still landing, not waited for, go to
  /// `reading` (they write into their regions until they end).
  void abandon(std::vector<transport::Request>& reading) {
    for (auto& l : landings_) reading.push_back(std::move(l.request));
    landings_.clear();
    pending_.reset();
  }

 private:
  struct Landing {
    transport::Request request;  // done at once for an eager message
    uint64_t offset, bytes;      // in the receive region, where it belongs
    bool elsewhere;              // landed at a Destination instead
  };
  /// Reads a write-back's header into `h`; false for a mailbox (kept for
  /// publish()) or a malformed message (dropped).
  bool parse(const transport::AmMessage& m, const transport::Region& receive, WriteBackHeader& h);
  /// Says why (the first time), then false.
  bool dropped(const transport::AmMessage& m, const std::string& why);
  bool publish_mailbox(transport::Region& receive);

  std::vector<Landing> landings_;
  std::optional<WriteBackHeader> pending_;
  bool said_ = false;
  bool broken_ = false;  // a payload failed to land: no mailbox is published any more
};

}  // namespace rdmaps::ps
