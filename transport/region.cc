#include "transport/region.h"

#include <cstring>

#include "rdmaps/error.h"

namespace rdmaps::transport {

namespace {
constexpr uint32_t kMagic = 0x47524452;  // "RDRG"
constexpr uint16_t kVersion = 1;
constexpr size_t kFixed = 4 + 2 + 1 + 1 + 8 + 8 + 4;
constexpr size_t kMaxKey = 64 * 1024;

template <typename T>
void put_le(std::vector<uint8_t>& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i)));
}
template <typename T>
T get_le(const uint8_t* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}
}  // namespace

const char* access_name(Access access) {
  switch (access) {
    case Access::kNone:
      return "none";
    case Access::kRemoteRead:
      return "remote-read";
    case Access::kRemoteWrite:
      return "remote-write";
    case Access::kRemoteReadWrite:
      return "remote-read-write";
  }
  return "invalid";
}

std::vector<uint8_t> RegionDescriptor::serialize() const {
  std::vector<uint8_t> out;
  out.reserve(kFixed + packed_key.size());
  put_le<uint32_t>(out, kMagic);
  put_le<uint16_t>(out, kVersion);
  out.push_back(static_cast<uint8_t>(access));
  out.push_back(0);
  put_le<uint64_t>(out, base);
  put_le<uint64_t>(out, length);
  put_le<uint32_t>(out, static_cast<uint32_t>(packed_key.size()));
  out.insert(out.end(), packed_key.begin(), packed_key.end());
  return out;
}

RegionDescriptor RegionDescriptor::parse(std::span<const uint8_t> bytes, const std::string& source) {
  auto bad = [&](const std::string& why) {
    return Error(Errc::kProtocol, "region descriptor from " + source + " rejected: " + why);
  };
  if (bytes.size() < kFixed)
    throw bad(std::to_string(bytes.size()) + " bytes, shorter than the " + std::to_string(kFixed) + "-byte header");
  const uint8_t* p = bytes.data();
  if (get_le<uint32_t>(p) != kMagic) throw bad("wrong magic (not a region descriptor)");
  if (get_le<uint16_t>(p + 4) != kVersion)
    throw bad("version " + std::to_string(get_le<uint16_t>(p + 4)) + ", expected " + std::to_string(kVersion));
  RegionDescriptor d;
  uint8_t access = p[6];
  if (access > static_cast<uint8_t>(Access::kRemoteReadWrite)) throw bad("access code " + std::to_string(access));
  d.access = static_cast<Access>(access);
  if (p[7] != 0) throw bad("reserved byte " + std::to_string(p[7]) + ", expected 0");
  d.base = get_le<uint64_t>(p + 8);
  d.length = get_le<uint64_t>(p + 16);
  uint32_t key_len = get_le<uint32_t>(p + 24);
  if (key_len == 0 || key_len > kMaxKey) throw bad("packed key of " + std::to_string(key_len) + " bytes");
  if (bytes.size() != kFixed + key_len)
    throw bad("size " + std::to_string(bytes.size()) + " does not match header (" + std::to_string(kFixed + key_len) +
              ")");
  if (d.base + d.length < d.base) throw bad("base + length overflows");
  d.packed_key.assign(p + kFixed, p + kFixed + key_len);
  return d;
}

}  // namespace rdmaps::transport
