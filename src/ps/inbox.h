// A worker's inbox on one server lane: a ring of slots (header, payload,
// doorbell) in lane memory that only this worker may write. The writer is the
// worker's side: credits, slot layout, and either put + fence + doorbell
// (where UCX does RMA natively) or one active message that lands the same
// bytes in the same slot (where it emulates RMA, over tcp). The reader is the
// lane's side: it yields each message once, in sequence order, whichever way
// it came (docs/protocol.md "Inbox slot").
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "src/ps/protocol.h"
#include "transport/context.h"

namespace rdmaps::ps {

class InboxWriter {
 public:
  /// `inbox`: the lane's inbox for this worker, imported on `ep`.
  InboxWriter(transport::Context& context, transport::Endpoint& ep, std::unique_ptr<transport::RemoteRegion> inbox,
              SlotLayout layout, uint32_t slots, bool use_am);

  uint64_t next_seq() const { return next_seq_; }
  /// Whether the next slot is free once the lane consumed every message up to `consumed`.
  bool has_credit(uint64_t consumed) const { return next_seq_ <= consumed + slots_; }
  /// Posts `header` (its seq filled in) and `bytes` of payload into the next
  /// slot; has_credit() must hold. The requests keep the buffers busy.
  uint64_t post(SlotHeader header, const void* payload, size_t bytes, std::vector<transport::Request>& inflight);
  bool use_am() const { return use_am_; }

 private:
  transport::Endpoint& ep_;
  std::unique_ptr<transport::RemoteRegion> inbox_;
  std::unique_ptr<transport::Region> staging_;  // slot headers and doorbells, registered
  SlotLayout layout_;
  uint32_t slots_;
  bool use_am_;
  uint64_t next_seq_ = 1;
};

class InboxReader {
 public:
  InboxReader(std::unique_ptr<transport::Region> inbox, SlotLayout layout, uint32_t slots);

  const transport::Region& region() const { return *inbox_; }

  struct Message {
    SlotHeader header;  ///< copied out once; nothing in it is validated yet
    const uint8_t* payload;
    uint64_t doorbell;  ///< equals header.seq in a well-formed message
  };
  /// The message due next, once its doorbell rang.
  std::optional<Message> peek();
  /// Frees the slot of the message peek() returned; returns its sequence number.
  uint64_t consume();
  uint64_t expected() const { return expected_; }

  /// Active-message path: lands `m` (a SlotHeader, then the payload) in its
  /// slot; its doorbell rings in complete() once the payload is in. Returns
  /// why it was refused where it has no slot (a sequence outside the credit
  /// window), or "". One in the window that cannot land (oversize, or its
  /// payload failed) rings its slot all the same, marked failed(): it is
  /// rejected and consumed in its turn, its credit returned (the lane waited
  /// for that sequence for good).
  std::string land(transport::Context& context, transport::AmMessage& m);
  /// Rings the doorbells of landings that completed or failed; true if any did.
  bool complete();
  /// Why the message due next could not land, if it could not (taken once).
  std::optional<std::string> failed() {
    if (failed_.empty()) return std::nullopt;
    return take_failure();
  }
  bool landing() const { return !landings_.empty(); }
  /// The worker is gone: its payloads still landing, not waited for, go to
  /// `writing` (they write into this inbox until they end).
  void abandon_landings(std::vector<transport::Request>& writing) {
    for (auto& l : landings_) writing.push_back(std::move(l.request));
    landings_.clear();
  }

 private:
  uint8_t* slot(uint64_t seq) const;
  void ring(uint64_t seq);
  void fail(uint64_t seq, std::string why);
  std::optional<std::string> take_failure();

  struct Landing {
    uint64_t seq;
    transport::Request request;
  };
  std::unique_ptr<transport::Region> inbox_;
  SlotLayout layout_;
  uint32_t slots_;
  uint64_t expected_ = 1;
  std::vector<Landing> landings_;
  std::vector<std::pair<uint64_t, std::string>> failed_;  // rung, not landed: by sequence
  std::vector<uint64_t> arrived_;                         // by slot: the last sequence that arrived there
};

inline bool InboxReader::complete() {
  bool any = false;
  std::erase_if(landings_, [&](Landing& l) {
    try {
      if (!l.request.test()) return false;
      ring(l.seq);
    } catch (const Error& e) {
      fail(l.seq, std::string("payload did not arrive: ") + e.what());
    }
    any = true;
    return true;
  });
  return any;
}

}  // namespace rdmaps::ps
