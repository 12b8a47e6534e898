// ucp_mem_map'ed memory (owned memh + packed key) and unpacked peer keys.
#pragma once

#include <ucp/api/ucp.h>

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "transport/region.h"
#include "transport/ucx/handles.h"

namespace rdmaps::transport::ucx {

class UcxEndpoint;

class UcxRegion final : public Region {
 public:
  /// allocate=true lets UCX allocate (shared-memory backed where possible).
  static std::unique_ptr<UcxRegion> map(ucp_context_h context, void* data, size_t size, Access access, bool allocate);
  ~UcxRegion() override;
  RegionDescriptor descriptor(Access rights) const override;
  size_t allocated() const override { return allocated_; }
  ucp_mem_h memh() const { return memh_; }

 private:
  UcxRegion(ucp_context_h context, ucp_mem_h memh, void* data, size_t size, size_t allocated, Access access,
            std::vector<uint8_t> packed_key);
  ucp_context_h context_;
  ucp_mem_h memh_;
  size_t allocated_;
  std::vector<uint8_t> packed_key_;
};

/// Throws Error(kProtocol) naming `peer` where `key` is not laid out as UCX
/// packs a remote key: a map of memory domains (8 bytes), the memory type (1),
/// then per domain in the map a length byte and that many bytes (what may
/// follow, device distances, is UCX's to read). ucp_ep_rkey_unpack() takes no
/// length: a 9-byte key naming every domain was read past and crashed the lane.
/// A domain's entry shorter than its component's key is not caught: nothing
/// public says which component a peer's domain index is (docs/security.md).
void check_packed_key(std::span<const uint8_t> key, const std::string& peer);

class UcxRemoteRegion final : public RemoteRegion {
 public:
  UcxRemoteRegion(const UcxEndpoint* owner, const RegionDescriptor& d, RkeyPtr rkey)
      : RemoteRegion(d.base, d.length, d.access), owner_(owner), rkey_(std::move(rkey)) {}
  const UcxEndpoint* owner() const { return owner_; }
  ucp_rkey_h rkey() const { return rkey_.get(); }

 private:
  const UcxEndpoint* owner_;
  RkeyPtr rkey_;
};

}  // namespace rdmaps::transport::ucx
