// Bounds-checked little-endian encoding for set-up messages: the bootstrap
// handshake's and the parameter server's.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "rdmaps/error.h"

namespace rdmaps::transport {

// The fields are copied in the host's order: what the docs call little-endian
// (docs/protocol.md) holds only where the host is.
static_assert(std::endian::native == std::endian::little, "rdmaps' wire and checkpoint formats are little-endian");

class WireWriter {
 public:
  // Reserving up front also keeps GCC 12 from a false -Wstringop-overflow on
  // the first small write into an empty vector.
  WireWriter() { out_.reserve(256); }
  void u8(uint8_t v) { raw(&v, 1); }
  void u16(uint16_t v) { raw(&v, 2); }
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void f32(float v) { raw(&v, 4); }
  void bytes(const std::vector<uint8_t>& b) {
    u32(static_cast<uint32_t>(b.size()));
    raw(b.data(), b.size());
  }
  void str(const std::string& s) {
    u32(static_cast<uint32_t>(s.size()));
    raw(s.data(), s.size());
  }
  /// Bytes without a length: fixed-size fields, or the rest of a message.
  void raw(const void* p, size_t n) {
    const size_t at = out_.size();
    out_.resize(at + n);
    if (n) std::memcpy(out_.data() + at, p, n);
  }
  std::vector<uint8_t> take() { return std::move(out_); }

 private:
  std::vector<uint8_t> out_;
};

class WireReader {
 public:
  WireReader(std::span<const uint8_t> in, std::string what) : in_(in), what_(std::move(what)) {}
  uint8_t u8() { return fixed<uint8_t>(); }
  uint16_t u16() { return fixed<uint16_t>(); }
  uint32_t u32() { return fixed<uint32_t>(); }
  uint64_t u64() { return fixed<uint64_t>(); }
  float f32() { return fixed<float>(); }
  std::vector<uint8_t> bytes(size_t limit) {
    size_t n = length(limit);
    std::vector<uint8_t> b(in_.begin() + pos_, in_.begin() + pos_ + n);
    pos_ += n;
    return b;
  }
  std::string str(size_t limit) {
    size_t n = length(limit);
    std::string s(reinterpret_cast<const char*>(in_.data()) + pos_, n);
    pos_ += n;
    return s;
  }
  /// `n` bytes without a length (a fixed-size field).
  void raw(void* out, size_t n) {
    if (in_.size() - pos_ < n) fail("truncated at byte " + std::to_string(pos_));
    std::memcpy(out, in_.data() + pos_, n);
    pos_ += n;
  }
  /// Everything not read yet.
  std::span<const uint8_t> rest() {
    auto r = in_.subspan(pos_);
    pos_ = in_.size();
    return r;
  }
  void done() const {
    if (pos_ != in_.size()) fail(std::to_string(in_.size() - pos_) + " trailing bytes");
  }
  [[noreturn]] void fail(const std::string& why) const { throw Error(Errc::kProtocol, what_ + " rejected: " + why); }

 private:
  template <typename T>
  T fixed() {
    if (in_.size() - pos_ < sizeof(T)) fail("truncated at byte " + std::to_string(pos_));
    T v;
    std::memcpy(&v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  size_t length(size_t limit) {
    uint32_t n = u32();
    if (n > limit) fail("field of " + std::to_string(n) + " bytes exceeds " + std::to_string(limit));
    if (in_.size() - pos_ < n) fail("truncated field at byte " + std::to_string(pos_));
    return n;
  }
  std::span<const uint8_t> in_;
  std::string what_;
  size_t pos_ = 0;
};

}  // namespace rdmaps::transport
