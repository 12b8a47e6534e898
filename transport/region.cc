#include "transport/region.h"

#include <cstring>

#include "rdmaps/error.h"
#include "transport/wire.h"

namespace rdmaps::transport {

namespace {
constexpr uint32_t kMagic = 0x47524452;  // "RDRG"
constexpr uint16_t kVersion = 1;
constexpr size_t kFixed = 4 + 2 + 1 + 1 + 8 + 8 + 4;
constexpr size_t kMaxKey = 64 * 1024;

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
  WireWriter w;
  w.u32(kMagic);
  w.u16(kVersion);
  w.u8(static_cast<uint8_t>(access));
  w.u8(0);  // reserved
  w.u64(base);
  w.u64(length);
  w.u32(static_cast<uint32_t>(packed_key.size()));
  w.raw(packed_key.data(), packed_key.size());
  return w.take();
}

RegionDescriptor RegionDescriptor::parse(std::span<const uint8_t> bytes, const std::string& source) {
  WireReader r(bytes, "region descriptor from " + source);
  if (bytes.size() < kFixed)
    r.fail(std::to_string(bytes.size()) + " bytes, shorter than the " + std::to_string(kFixed) + "-byte header");
  if (r.u32() != kMagic) r.fail("wrong magic (not a region descriptor)");
  if (const uint16_t version = r.u16(); version != kVersion)
    r.fail("version " + std::to_string(version) + ", expected " + std::to_string(kVersion));
  RegionDescriptor d;
  const uint8_t access = r.u8();
  if (access > static_cast<uint8_t>(Access::kRemoteReadWrite)) r.fail("access code " + std::to_string(access));
  d.access = static_cast<Access>(access);
  if (const uint8_t reserved = r.u8(); reserved != 0)
    r.fail("reserved byte " + std::to_string(reserved) + ", expected 0");
  d.base = r.u64();
  d.length = r.u64();
  const uint32_t key_len = r.u32();
  if (key_len == 0 || key_len > kMaxKey) r.fail("packed key of " + std::to_string(key_len) + " bytes");
  if (bytes.size() != kFixed + key_len)
    r.fail("size " + std::to_string(bytes.size()) + " does not match header (" + std::to_string(kFixed + key_len) +
           ")");
  if (d.base + d.length < d.base) r.fail("base + length overflows");
  const auto key = r.rest();
  d.packed_key.assign(key.begin(), key.end());
  return d;
}

}  // namespace rdmaps::transport
