// Fuzzing of what lands active messages from a peer in our memory, over tcp
// (where UCX emulates RMA): a worker's pushes into the lane's inbox
// (InboxReader::land) and a server's write-backs into the worker's receive
// region (WriteBackReceiver). Each input is a stream of messages and turns,
// fed to one reader in a real UCX context; what the reader then yields must
// be what came, where the protocol says it goes (docs/protocol.md "Inbox
// slot", "Write-back"), and nothing else in our memory may change.
// Rendezvous payloads are UCX's to fetch: these are eager ones.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <optional>
#include <string>

#include "rdmaps/log.h"
#include "src/ps/am_ids.h"
#include "src/ps/inbox.h"
#include "src/ps/protocol.h"
#include "src/ps/write_back.h"
#include "tests/fuzz/fuzz_harness.h"
#include "transport/context.h"

namespace rdmaps::test {
namespace {

using transport::AmMessage;

transport::Context& context() {
  static const auto c = transport::create_context({.transport = transport::TransportKind::kTcp, .loopback_only = true});
  return *c;
}

// ---- the stream: one byte of turn, then a message's header and payload -----------

enum class Turn { kMessage, kTake, kComplete };

/// Reads the stream `b` turn by turn: a message is a header length byte, the
/// header, a 16-bit payload length, the payload (each cut short where `b` ends).
class Stream {
 public:
  explicit Stream(const Bytes& b) : b_(b) {}
  bool done() const { return at_ >= b_.size(); }
  Turn turn() { return static_cast<Turn>(b_[at_++] % 3); }
  /// The next message's header and payload.
  std::pair<Bytes, Bytes> message() {
    Bytes header = take(done() ? 0 : b_[at_++]);
    uint16_t n = 0;
    const Bytes length = take(2);
    if (!length.empty()) std::memcpy(&n, length.data(), length.size());  // (an empty vector's data() may be null)
    return {std::move(header), take(n)};
  }

 private:
  Bytes take(size_t n) {
    n = std::min(n, b_.size() - at_);
    Bytes out(b_.begin() + static_cast<std::ptrdiff_t>(at_), b_.begin() + static_cast<std::ptrdiff_t>(at_ + n));
    at_ += n;
    return out;
  }
  const Bytes& b_;
  size_t at_ = 0;
};

AmMessage eager(Bytes& header, Bytes& payload) {
  AmMessage m;
  m.header = header.data();
  m.header_length = header.size();
  m.length = payload.size();
  m.payload = payload.data();
  return m;
}

/// Builds a stream of turns.
struct Writer {
  Bytes out;
  Writer& message(const void* header, size_t header_bytes, const Bytes& payload) {
    out.push_back(static_cast<uint8_t>(Turn::kMessage));
    out.push_back(static_cast<uint8_t>(header_bytes));
    const auto* h = static_cast<const uint8_t*>(header);
    out.insert(out.end(), h, h + header_bytes);
    const auto n = static_cast<uint16_t>(payload.size());
    out.insert(out.end(), reinterpret_cast<const uint8_t*>(&n), reinterpret_cast<const uint8_t*>(&n) + 2);
    out.insert(out.end(), payload.begin(), payload.end());
    return *this;
  }
  Writer& turn(Turn t) {
    out.push_back(static_cast<uint8_t>(t));
    return *this;
  }
};

Bytes counting(size_t n, uint8_t from) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(from + i);
  return b;
}

// ---- inbox -------------------------------------------------------------------------

constexpr uint32_t kSlots = 4;
constexpr ps::SlotLayout kLayout{256};

ps::SlotHeader slot(ps::MsgType type, uint64_t seq, uint32_t floats, uint16_t flags = 0) {
  ps::SlotHeader h{};
  h.magic = ps::kSlotMagic;
  h.type = static_cast<uint16_t>(type);
  h.flags = flags;
  h.seq = seq;
  h.length = floats;
  return h;
}

Writer& push(Writer& w, uint64_t seq, uint32_t floats, bool bf16 = false) {
  const auto h = slot(ps::MsgType::kPush, seq, floats, bf16 ? ps::kFlagBf16 : 0);
  return w.message(&h, sizeof(h), counting(floats * (bf16 ? 2 : 4), static_cast<uint8_t>(seq)));
}

std::vector<Bytes> inbox_seeds() {
  std::vector<Bytes> s;
  {  // in order, every kind of payload, two laps of the ring
    Writer w;
    push(w, 1, 16).turn(Turn::kTake);
    push(w, 2, 16, true);
    const auto pull = slot(ps::MsgType::kPull, 3, 1);
    w.message(&pull, sizeof(pull), {}).turn(Turn::kComplete).turn(Turn::kTake);
    for (uint64_t seq = 4; seq < 8; ++seq) push(w, seq, 64);  // a full slot each
    const auto clock = slot(ps::MsgType::kClock, 8, 0);
    w.turn(Turn::kTake).message(&clock, sizeof(clock), {}).turn(Turn::kTake);
    s.push_back(w.out);
  }
  {  // out of order, then one that arrived twice
    Writer w;
    push(w, 2, 8);
    push(w, 1, 4).turn(Turn::kTake);
    push(w, 3, 2);
    push(w, 3, 2).turn(Turn::kTake);
    s.push_back(w.out);
  }
  {  // what cannot land still takes its turn: a payload past the slot, one shorter than its floats
    Writer w;
    const auto big = slot(ps::MsgType::kPush, 1, 65);
    w.message(&big, sizeof(big), counting(260, 0));
    const auto short_one = slot(ps::MsgType::kInit, 2, 10);
    w.message(&short_one, sizeof(short_one), counting(36, 9));
    push(w, 3, 1).turn(Turn::kTake);
    s.push_back(w.out);
  }
  return s;
}

// What the lane yields from the inbox is what landed, once each, in sequence
// order; a message that could not land is yielded as failed in its turn (its
// credit returned). Nothing writes outside the slots' headers and payloads.
std::string feed_inbox(const Bytes& input) {
  transport::Context& c = context();
  auto region = c.allocate(kLayout.slot_bytes() * kSlots, transport::Access::kRemoteWrite);
  const uint8_t* base = static_cast<const uint8_t*>(region->data());
  ps::InboxReader reader(std::move(region), kLayout, kSlots);
  std::map<uint64_t, std::pair<Bytes, Bytes>> landed;  // by sequence: header and payload
  auto take = [&]() -> std::string {
    reader.complete();
    while (auto m = reader.peek()) {
      const uint64_t due = reader.expected();
      if (m->doorbell != due)
        return "doorbell " + std::to_string(m->doorbell) + " rang where sequence " + std::to_string(due) + " was due";
      const auto it = landed.find(due);
      if (it == landed.end()) return "sequence " + std::to_string(due) + " yielded, which never landed";
      if (!reader.failed()) {
        const auto& [header, payload] = it->second;
        if (std::memcmp(&m->header, header.data(), sizeof(m->header)) != 0) return "a header that is not the one sent";
        if (!payload.empty() && std::memcmp(m->payload, payload.data(), payload.size()) != 0)
          return "a payload that is not the one sent";
        const auto type = static_cast<ps::MsgType>(m->header.type);
        const uint64_t size = m->header.flags & ps::kFlagBf16 ? 2 : 4;
        if ((type == ps::MsgType::kPush || type == ps::MsgType::kInit) && payload.size() != m->header.length * size)
          return "a push of " + std::to_string(m->header.length) + " floats yielded from " +
                 std::to_string(payload.size()) + " bytes";
      }
      landed.erase(it);
      if (reader.consume() != due) return "consumed another sequence than the one due";
    }
    return {};
  };
  Stream stream(input);
  while (!stream.done()) {
    const Turn t = stream.turn();
    if (t == Turn::kComplete) {
      reader.complete();
    } else if (t == Turn::kTake) {
      if (std::string wrong = take(); !wrong.empty()) return wrong;
    } else {
      auto [header, payload] = stream.message();
      AmMessage m = eager(header, payload);
      ps::SlotHeader h{};
      if (!header.empty()) std::memcpy(&h, header.data(), std::min(header.size(), sizeof(h)));
      if (!reader.land(c, m).empty()) continue;  // refused: no slot of its own
      if (header.size() != sizeof(h)) return "a header of " + std::to_string(header.size()) + " bytes landed";
      if (h.seq < reader.expected()) return "sequence " + std::to_string(h.seq) + " landed behind the reader";
      if (!landed.emplace(h.seq, std::pair{header, payload}).second)
        return "sequence " + std::to_string(h.seq) + " landed twice";
    }
  }
  if (std::string wrong = take(); !wrong.empty()) return wrong;
  // Between the slots: each doorbell's line past its payload's rounded end stays as it was zeroed.
  for (uint32_t i = 0; i < kSlots; ++i) {
    const uint8_t* s = base + i * kLayout.slot_bytes();
    for (size_t at = kLayout.doorbell_offset() + 8; at < kLayout.slot_bytes(); ++at)
      if (s[at]) return "slot " + std::to_string(i) + " written past its doorbell";
  }
  return {};
}

TEST(Fuzz, InboxActiveMessages) { fuzz("inbox-am", feed_inbox); }

// ---- write-backs ---------------------------------------------------------------------

constexpr size_t kReceive = 1024;

Writer& payload_at(Writer& w, uint64_t offset, size_t bytes) {
  const ps::WriteBackHeader h{offset, 0, 0, {}};
  return w.message(&h, sizeof(h), counting(bytes, static_cast<uint8_t>(offset)));
}

Writer& mailbox_at(Writer& w, uint64_t offset, uint64_t consumed) {
  ps::WriteBackHeader h{offset, 1, 0, {}};
  h.box.consumed_seq = consumed;
  h.box.pull_done = consumed - 1;
  return w.message(&h, sizeof(h), {});
}

std::vector<Bytes> write_back_seeds() {
  std::vector<Bytes> s;
  {  // parameters, then the mailbox that says they are in place
    Writer w;
    payload_at(w, 128, 256);
    payload_at(w, 384, 64);
    mailbox_at(w, 0, 2).turn(Turn::kTake).turn(Turn::kTake);
    s.push_back(w.out);
  }
  {  // to the region's last byte; a mailbox replaced before its turn
    Writer w;
    payload_at(w, kReceive - 16, 16);
    mailbox_at(w, kReceive - 64, 1);
    mailbox_at(w, 64, 5).turn(Turn::kTake).turn(Turn::kTake);
    s.push_back(w.out);
  }
  return s;
}

// The receive region holds what the protocol says, and only that: payloads at
// their offsets, and a mailbox once the payloads sent before it were reported.
std::string feed_write_backs(const Bytes& input) {
  transport::Context& c = context();
  auto receive = c.allocate(kReceive, transport::Access::kRemoteWrite);
  std::memset(receive->data(), 0, kReceive);
  ps::WriteBackReceiver receiver;
  Bytes expect(kReceive, 0);
  std::optional<ps::WriteBackHeader> mailbox;  // waiting for its turn
  std::vector<std::pair<uint64_t, uint64_t>> sent, reported;
  auto nowhere_else = [](uint64_t, uint64_t) { return ps::WriteBackReceiver::Destination{}; };
  Stream stream(input);
  while (!stream.done()) {
    const Turn t = stream.turn();
    if (t == Turn::kMessage) {
      auto [header, payload] = stream.message();
      AmMessage m = eager(header, payload);
      receiver.on_message(c, m, *receive, nowhere_else);
      if (header.size() != sizeof(ps::WriteBackHeader)) continue;  // dropped
      ps::WriteBackHeader h;
      std::memcpy(&h, header.data(), sizeof(h));
      if (h.mailbox == 1 && h.offset <= kReceive - sizeof(ps::Mailbox)) mailbox = h;
      if (h.mailbox == 0 && h.offset <= kReceive && payload.size() <= kReceive - h.offset) {
        std::copy(payload.begin(), payload.end(), expect.begin() + static_cast<std::ptrdiff_t>(h.offset));
        sent.emplace_back(h.offset, payload.size());
      }
      continue;
    }
    if (t == Turn::kComplete) continue;
    const size_t before = reported.size();
    receiver.publish(*receive, [&](uint64_t offset, uint64_t bytes, bool elsewhere) {
      if (!elsewhere) reported.emplace_back(offset, bytes);
    });
    // A mailbox is published on a turn that reported no payload (they all came before it).
    if (reported.size() == before && mailbox) {
      std::memcpy(expect.data() + mailbox->offset, &mailbox->box, sizeof(ps::Mailbox));
      mailbox.reset();
    }
    if (reported != sent) return "payloads reported are not those that came";
    if (std::memcmp(receive->data(), expect.data(), kReceive) != 0) {
      const auto* got = static_cast<const uint8_t*>(receive->data());
      const size_t at = std::mismatch(expect.begin(), expect.end(), got).first - expect.begin();
      return "the receive region differs from what came at byte " + std::to_string(at);
    }
  }
  return {};
}

// A faulty server's write-backs are said once per lane, not once per message.
TEST(Fuzz, WriteBackActiveMessages) {
  size_t said = 0;
  set_log_sink([&](LogLevel, const std::string&) { ++said; });
  fuzz("write-back-am", [&](const Bytes& input) -> std::string {
    said = 0;
    std::string wrong = feed_write_backs(input);
    return wrong.empty() && said > 1 ? std::to_string(said) + " lines said of one lane's dropped write-backs" : wrong;
  });
  set_log_sink(nullptr);
}

}  // namespace

std::map<std::string, Seeds> landing_seeds() {
  return {{"inbox-am", {inbox_seeds(), {}}}, {"write-back-am", {write_back_seeds(), {}}}};
}

}  // namespace rdmaps::test
