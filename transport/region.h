// Registered memory: a local Region owns its registration and packed remote
// key; a RemoteRegion is a peer's region as this side may address it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace rdmaps::transport {

/// Remote rights. A peer is handed the narrowest rights it needs.
enum class Access : uint8_t {
  kNone = 0,
  kRemoteRead = 1,
  kRemoteWrite = 2,
  kRemoteReadWrite = 3,
};
constexpr bool allows(Access have, Access need) {
  return (static_cast<uint8_t>(have) & static_cast<uint8_t>(need)) == static_cast<uint8_t>(need);
}
const char* access_name(Access access);

/// What a peer needs to address a region: base, length, rights, packed key.
struct RegionDescriptor {
  uint64_t base = 0;
  uint64_t length = 0;
  Access access = Access::kNone;
  std::vector<uint8_t> packed_key;

  std::vector<uint8_t> serialize() const;
  /// Validates every field; throws Error(kProtocol) naming `source` on bad bytes.
  static RegionDescriptor parse(std::span<const uint8_t> bytes, const std::string& source);
};

/// Local registered memory, registered once and kept for its whole life.
class Region {
 public:
  virtual ~Region() = default;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }
  Access access() const { return access_; }
  /// Bytes from data() that belong to this region alone: what the transport
  /// allocated for it (rounded up to a huge page, say), else size().
  virtual size_t allocated() const { return size_; }
  /// Descriptor granting `rights` (a subset of access()) to one peer.
  virtual RegionDescriptor descriptor(Access rights) const = 0;

 protected:
  Region(void* data, size_t size, Access access) : data_(data), size_(size), access_(access) {}

 private:
  void* data_;
  size_t size_;
  Access access_;
};

/// A peer's region, bound to the endpoint it was imported on.
class RemoteRegion {
 public:
  virtual ~RemoteRegion() = default;
  RemoteRegion(const RemoteRegion&) = delete;
  RemoteRegion& operator=(const RemoteRegion&) = delete;

  uint64_t base() const { return base_; }
  uint64_t size() const { return size_; }
  Access access() const { return access_; }

 protected:
  RemoteRegion(uint64_t base, uint64_t size, Access access) : base_(base), size_(size), access_(access) {}

 private:
  uint64_t base_;
  uint64_t size_;
  Access access_;
};

}  // namespace rdmaps::transport
