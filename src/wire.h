// Bounds-checked little-endian encoding for set-up messages.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "rdmaps/error.h"

namespace rdmaps::ps {

class WireWriter {
 public:
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
  std::vector<uint8_t> take() { return std::move(out_); }

 private:
  void raw(const void* p, size_t n) {
    auto* b = static_cast<const uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  std::vector<uint8_t> out_;
};

class WireReader {
 public:
  WireReader(const std::vector<uint8_t>& in, std::string what) : in_(in), what_(std::move(what)) {}
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
  const std::vector<uint8_t>& in_;
  std::string what_;
  size_t pos_ = 0;
};

}  // namespace rdmaps::ps
