#include "src/ps/write_back.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "rdmaps/log.h"

namespace rdmaps::ps {

WriteBackSender::WriteBackSender(transport::Context& context, transport::Endpoint& ep,
                                 std::unique_ptr<transport::RemoteRegion> receive, uint64_t mailbox_offset,
                                 size_t shards, bool use_am,
                                 std::vector<std::unique_ptr<transport::RemoteRegion>> landings)
    : ep_(ep),
      receive_(std::move(receive)),
      landings_(std::move(landings)),
      outbox_(context.allocate(sizeof(Mailbox) + shards * 8 + 64, transport::Access::kNone)),
      mailbox_offset_(mailbox_offset),
      use_am_(use_am),
      data_headers_(use_am ? shards + 1 : 0) {
  data_.reserve(shards + 1);
  for (const auto& l : landings_) landing_bytes_.push_back(l->size());
}

void WriteBackSender::wait_sent(std::chrono::milliseconds timeout) {
  flush_.wait_for(timeout);
  flushed();
  for (auto& r : data_) r.wait_for(timeout);
  data_.clear();
}

void WriteBackSender::send_params(const float* params, size_t floats, const transport::Region& source, uint64_t offset,
                                  uint32_t landing) {
  if (!use_am_) {
    const transport::RemoteRegion& into = landing ? *landings_.at(landing - 1) : *receive_;
    data_.push_back(ep_.put(params, floats * sizeof(float), into, offset, &source));
    landed_ |= landing != 0;
    return;
  }
  WriteBackHeader& h = data_headers_.at(data_.size());
  h = WriteBackHeader{offset, 0, 0, {}};
  data_.push_back(ep_.am_send(kAmWriteBack, &h, sizeof(WriteBackHeader), params, floats * sizeof(float), &source));
}

void WriteBackSender::send_versions(const uint64_t* versions, size_t count, uint64_t offset) {
  std::memcpy(staged_versions(), versions, count * 8);
  if (!use_am_) {
    // A fence orders puts on one transport; emulated puts into a landing
    // region (messages the worker applies) are behind the mailbox only once
    // flushed. Not waited for here: the flush completes only while the worker
    // drives its UCX (the puts are emulated), and one that stopped held every
    // other worker of the lane for 30 s. The versions, and any later mailbox,
    // go once it completed (flushed()).
    if (landed_) flush_ = ep_.flush();  // else none: flushed() puts them at once
    landed_ = false;
    deferred_ = {count, offset};
    flushed();
    return;
  }
  WriteBackHeader& h = data_headers_.at(data_.size());
  h = WriteBackHeader{offset, 0, 0, {}};
  // Active messages on one endpoint arrive in order: no fence needed.
  data_.push_back(ep_.am_send(kAmWriteBack, &h, sizeof(WriteBackHeader), staged_versions(), count * 8, outbox_.get()));
}

bool WriteBackSender::flushed() {
  if (!deferred_.count) return true;
  if (!flush_.test()) return false;
  data_.push_back(ep_.put(staged_versions(), deferred_.count * 8, *receive_, deferred_.offset, outbox_.get()));
  ep_.fence();
  deferred_ = {};
  return true;
}

bool WriteBackSender::sending() {
  if (!flushed()) return true;
  for (auto& r : data_)
    if (!r.test()) return true;
  data_.clear();
  return false;
}

void WriteBackSender::send_mailbox(const Mailbox& box, std::chrono::steady_clock::time_point deadline,
                                   std::chrono::milliseconds bound) {
  flush_.wait_until(deadline, bound, nullptr);
  flushed();
  mailbox_.wait_until(deadline, bound, nullptr);  // its staging area is reused below
  post_mailbox(box);
}

bool WriteBackSender::try_send_mailbox(const Mailbox& box) {
  if (!flushed() || !mailbox_.test()) return false;
  post_mailbox(box);
  return true;
}

void WriteBackSender::post_mailbox(const Mailbox& box) {
  if (use_am_) {
    // Ordered after the earlier write-back messages: the worker publishes it
    // once their payloads have landed.
    mailbox_header_ = WriteBackHeader{mailbox_offset_, 1, 0, box};
    mailbox_ = ep_.am_send(kAmWriteBack, &mailbox_header_, sizeof(WriteBackHeader), nullptr, 0);
  } else {
    std::memcpy(outbox_->data(), &box, sizeof(Mailbox));
    mailbox_ = ep_.put(outbox_->data(), sizeof(Mailbox), *receive_, mailbox_offset_, outbox_.get());
  }
}

std::vector<transport::Request> WriteBackSender::abandon() {
  std::vector<transport::Request> sending = std::move(data_);
  data_.clear();
  deferred_ = {};  // the worker is gone: its versions need not follow
  sending.push_back(std::move(flush_));
  sending.push_back(std::move(mailbox_));
  return sending;
}

bool WriteBackReceiver::parse(const transport::AmMessage& m, const transport::Region& receive, WriteBackHeader& h) {
  if (m.header_length != sizeof(WriteBackHeader))
    return dropped(
        m, "a header of " + std::to_string(m.header_length) + " bytes, not " + std::to_string(sizeof(WriteBackHeader)));
  std::memcpy(&h, m.header, sizeof(h));
  if (h.mailbox > 1) return dropped(m, "mailbox flag " + std::to_string(h.mailbox));
  if (h.mailbox) {
    // Subtracted, not added: an offset near 2^64 from a faulty server wrapped past the check.
    if (receive.size() >= sizeof(Mailbox) && h.offset <= receive.size() - sizeof(Mailbox)) {
      pending_ = h;
      return false;
    }
    return dropped(m, "a mailbox at byte " + std::to_string(h.offset) + " of a " + std::to_string(receive.size()) +
                          "-byte receive region");
  }
  // Refused by the receive too, but as a handler's error, logged for every such message.
  if (h.offset > receive.size() || m.length > receive.size() - h.offset)
    return dropped(m, std::to_string(m.length) + " bytes at byte " + std::to_string(h.offset) + " of a " +
                          std::to_string(receive.size()) + "-byte receive region");
  return true;
}

bool WriteBackReceiver::dropped(const transport::AmMessage& m, const std::string& why) {
  // Once per lane: the worker's wait for what never comes names it then.
  if (!said_)
    logf(LogLevel::kWarn, "rdmaps: a write-back from %s was dropped: %s (a server of another version, or faulty?)",
         m.from ? m.from->peer_name().c_str() : "an unknown peer", why.c_str());
  said_ = true;
  return false;
}

bool WriteBackReceiver::publish_mailbox(transport::Region& receive) {
  if (!pending_ || !landings_.empty() || broken_) return false;
  std::memcpy(static_cast<uint8_t*>(receive.data()) + pending_->offset, &pending_->box, sizeof(Mailbox));
  pending_.reset();
  return true;
}

}  // namespace rdmaps::ps
