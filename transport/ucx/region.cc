#include "transport/ucx/region.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "rdmaps/log.h"
#include "transport/ucx/status.h"

namespace rdmaps::transport::ucx {

namespace {
std::string memlock_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_MEMLOCK, &lim) != 0) return "unknown";
  if (lim.rlim_cur == RLIM_INFINITY) return "unlimited";
  return std::to_string(lim.rlim_cur / 1024) + " KiB";
}
}  // namespace

std::unique_ptr<UcxRegion> UcxRegion::map(ucp_context_h context, void* data, size_t size, Access access,
                                          bool allocate) {
  if (size == 0) throw Error(Errc::kInvalidArgument, "cannot register a region of 0 bytes");
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_FLAGS |
                      UCP_MEM_MAP_PARAM_FIELD_PROT;
  params.address = allocate ? nullptr : data;
  params.length = size;
  params.flags = allocate ? UCP_MEM_MAP_ALLOCATE : 0;
  params.prot = UCP_MEM_MAP_PROT_LOCAL_READ | UCP_MEM_MAP_PROT_LOCAL_WRITE;
  if (allows(access, Access::kRemoteRead)) params.prot |= UCP_MEM_MAP_PROT_REMOTE_READ;
  if (allows(access, Access::kRemoteWrite)) params.prot |= UCP_MEM_MAP_PROT_REMOTE_WRITE;

  ucp_mem_h memh = nullptr;
  ucs_status_t status = ucp_mem_map(context, &params, &memh);
  if (status != UCS_OK) {
    throw Error(errc_from(status), std::string(allocate ? "allocating" : "registering") + " " + std::to_string(size) +
                                       " bytes (" + access_name(access) + ") failed: " + ucs_status_string(status) +
                                       "; if the locked-memory limit is the cause, raise `ulimit -l` (now " +
                                       memlock_limit() + ")");
  }
  ucp_mem_attr_t attr{};
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  status = ucp_mem_query(memh, &attr);
  if (status != UCS_OK) {
    ucp_mem_unmap(context, memh);
    throw error_from(status, "querying a registration", "");
  }
  void* key = nullptr;
  size_t key_size = 0;
  status = ucp_rkey_pack(context, memh, &key, &key_size);
  if (status != UCS_OK) {
    ucp_mem_unmap(context, memh);
    throw error_from(status, "packing a remote key", std::to_string(size) + " bytes");
  }
  // Out of memory below releases what UCX handed out.
  try {
    std::vector<uint8_t> packed(static_cast<uint8_t*>(key), static_cast<uint8_t*>(key) + key_size);
    ucp_rkey_buffer_release(key);
    key = nullptr;
    // The caller's memory is where the caller said: UCX 1.13 answers the
    // query with its registration cache entry's start (rounded down to 16
    // bytes, or an enclosing or adjoining registration's), and a peer's put
    // to offset 0 landed that far before the region (the key covers both).
    void* base = allocate ? attr.address : data;
    // What UCX allocated is ours alone, to its end: 2 MiB for a 1 MiB inbox in huge pages.
    const size_t allocated = allocate ? std::max(size, attr.length) : size;
    return std::unique_ptr<UcxRegion>(new UcxRegion(context, memh, base, size, allocated, access, std::move(packed)));
  } catch (...) {
    if (key) ucp_rkey_buffer_release(key);
    ucp_mem_unmap(context, memh);
    throw;
  }
}

UcxRegion::UcxRegion(ucp_context_h context, ucp_mem_h memh, void* data, size_t size, size_t allocated, Access access,
                     std::vector<uint8_t> packed_key)
    : Region(data, size, access),
      context_(context),
      memh_(memh),
      allocated_(allocated),
      packed_key_(std::move(packed_key)) {}

UcxRegion::~UcxRegion() {
  ucs_status_t status = ucp_mem_unmap(context_, memh_);
  if (status != UCS_OK)
    logf(LogLevel::kWarn, "rdmaps: warning: unmapping %zu bytes failed: %s", size(), ucs_status_string(status));
}

RegionDescriptor UcxRegion::descriptor(Access rights) const {
  if (!allows(access(), rights))
    throw Error(Errc::kPermissionDenied, std::string("cannot hand out ") + access_name(rights) +
                                             " rights to a region registered " + access_name(access()));
  RegionDescriptor d;
  d.base = reinterpret_cast<uint64_t>(data());
  d.length = size();
  d.access = rights;
  d.packed_key = packed_key_;
  return d;
}

void check_packed_key(std::span<const uint8_t> key, const std::string& peer) {
  constexpr size_t kHead = sizeof(uint64_t) + 1;
  auto bad = [&](const std::string& why) {
    return Error(Errc::kProtocol, "peer " + peer + " sent a packed key of " + std::to_string(key.size()) +
                                      " bytes that UCX could not have packed: " + why);
  };
  if (key.size() < kHead) throw bad("shorter than its memory-domain map and memory type");
  uint64_t domains = 0;
  std::memcpy(&domains, key.data(), sizeof(domains));
  size_t at = kHead;
  for (int d = 0; d < 64; ++d) {
    if (!(domains >> d & 1)) continue;
    if (at >= key.size() || at + 1 + key[at] > key.size())
      throw bad("its map names memory domain " + std::to_string(d) + ", whose key it does not hold");
    at += 1 + key[at];
  }
}

}  // namespace rdmaps::transport::ucx
