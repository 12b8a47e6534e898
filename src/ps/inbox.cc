#include "src/ps/inbox.h"

#include <atomic>
#include <cstring>

#include "rdmaps/error.h"
#include "src/ps/am_ids.h"

namespace rdmaps::ps {

namespace {
// Per slot: the header and the doorbell word, staged in registered memory.
constexpr size_t kStagingStride = 128;

std::atomic<uint64_t>* doorbell(uint8_t* slot, const SlotLayout& layout) {
  return reinterpret_cast<std::atomic<uint64_t>*>(slot + layout.doorbell_offset());
}
}  // namespace

InboxWriter::InboxWriter(transport::Context& context, transport::Endpoint& ep,
                         std::unique_ptr<transport::RemoteRegion> inbox, SlotLayout layout, uint32_t slots, bool use_am)
    : ep_(ep),
      inbox_(std::move(inbox)),
      staging_(context.allocate(kStagingStride * slots, transport::Access::kNone)),
      layout_(layout),
      slots_(slots),
      use_am_(use_am) {}

uint64_t InboxWriter::post(SlotHeader h, const void* payload, size_t bytes, std::vector<transport::Request>& inflight) {
  // The sequence advances once every part is under way: a post that threw
  // left a gap the lane would wait at for good. Room first, so that a request
  // made is never lost to a failed push_back.
  const uint64_t seq = next_seq_;
  h.seq = seq;
  const uint64_t slot = (seq - 1) % slots_;
  auto* staged = static_cast<uint8_t*>(staging_->data()) + slot * kStagingStride;
  std::memcpy(staged, &h, sizeof(h));
  if (inflight.capacity() - inflight.size() < 3)
    inflight.reserve(2 * inflight.capacity() + 3);  // grows as push_back would
  if (use_am_) {
    inflight.push_back(ep_.am_send(kAmPush, staged, sizeof(h), payload, bytes, nullptr));
    return next_seq_++;
  }
  const uint64_t base = slot * layout_.slot_bytes();
  if (bytes) inflight.push_back(ep_.put(payload, bytes, *inbox_, base + layout_.payload_offset()));
  inflight.push_back(ep_.put(staged, sizeof(h), *inbox_, base, staging_.get()));
  // The doorbell is ordered behind the header and payload: the lane never
  // sees it before they are visible.
  ep_.fence();
  std::memcpy(staged + 64, &seq, 8);
  inflight.push_back(ep_.put(staged + 64, 8, *inbox_, base + layout_.doorbell_offset(), staging_.get()));
  return next_seq_++;
}

InboxReader::InboxReader(std::unique_ptr<transport::Region> inbox, SlotLayout layout, uint32_t slots)
    : inbox_(std::move(inbox)), layout_(layout), slots_(slots), arrived_(slots, 0) {
  std::memset(inbox_->data(), 0, inbox_->size());
}

uint8_t* InboxReader::slot(uint64_t seq) const {
  return static_cast<uint8_t*>(inbox_->data()) + ((seq - 1) % slots_) * layout_.slot_bytes();
}

void InboxReader::ring(uint64_t seq) { doorbell(slot(seq), layout_)->store(seq, std::memory_order_release); }

std::optional<InboxReader::Message> InboxReader::peek() {
  uint8_t* s = slot(expected_);
  const uint64_t rung = doorbell(s, layout_)->load(std::memory_order_acquire);
  if (rung == 0 || rung + slots_ == expected_) return std::nullopt;  // empty, or last lap's
  Message m;
  std::memcpy(&m.header, s, sizeof(m.header));
  m.payload = s + layout_.payload_offset();
  m.doorbell = rung;
  return m;
}

uint64_t InboxReader::consume() {
  doorbell(slot(expected_), layout_)->store(0, std::memory_order_relaxed);
  // Before the credit that lets the worker ring this slot again is written
  // (weakly ordered CPUs): a late 0 would wipe its next doorbell.
  std::atomic_thread_fence(std::memory_order_release);
  return expected_++;
}

void InboxReader::fail(uint64_t seq, std::string why) {
  failed_.emplace_back(seq, std::move(why));
  ring(seq);
}

std::optional<std::string> InboxReader::take_failure() {
  for (auto it = failed_.begin(); it != failed_.end(); ++it)
    if (it->first == expected_) {
      std::string why = std::move(it->second);
      failed_.erase(it);
      return why;
    }
  return std::nullopt;
}

std::string InboxReader::land(transport::Context& context, transport::AmMessage& m) {
  SlotHeader h;
  if (m.header_length != sizeof(h)) return "active-message header of " + std::to_string(m.header_length) + " bytes";
  std::memcpy(&h, m.header, sizeof(h));
  if (h.seq < expected_ || h.seq >= expected_ + slots_)
    return "active message with sequence " + std::to_string(h.seq) + " outside the credit window [" +
           std::to_string(expected_) + ", +" + std::to_string(slots_) + ")";
  // Once per sequence: a second copy rewrote the slot under the first's
  // receive (its header applied with the other's payload, a doorbell rung
  // late over the next lap's) and left a failure no turn ever took.
  uint64_t& arrived = arrived_[(h.seq - 1) % slots_];
  if (arrived == h.seq) return "active message with sequence " + std::to_string(h.seq) + ", which already arrived";
  arrived = h.seq;
  uint8_t* s = slot(h.seq);
  std::memcpy(s, &h, sizeof(h));
  if (m.length > layout_.payload_bytes) {
    fail(h.seq, "active-message payload of " + std::to_string(m.length) + " bytes exceeds a slot");
    return {};
  }
  // A push or an init is applied from `length` floats of the slot: a shorter
  // payload left the rest of an earlier lap's message there, applied as its own.
  if (h.type == static_cast<uint16_t>(MsgType::kPush) || h.type == static_cast<uint16_t>(MsgType::kInit)) {
    const uint64_t want = uint64_t{h.length} * (h.flags & kFlagBf16 ? sizeof(uint16_t) : sizeof(float));
    if (m.length != want) {
      fail(h.seq, "active-message payload of " + std::to_string(m.length) + " bytes where its header's " +
                      std::to_string(h.length) + " floats take " + std::to_string(want));
      return {};
    }
  }
  Landing landing{h.seq, transport::Request()};
  try {
    if (m.length)
      landing.request =
          context.am_receive(m, *inbox_, (s - static_cast<uint8_t*>(inbox_->data())) + layout_.payload_offset());
  } catch (const Error& e) {  // its sequence waited for good (the handler's caller only logs)
    fail(h.seq, e.what());
    return {};
  }
  landings_.push_back(std::move(landing));
  return {};
}

}  // namespace rdmaps::ps
