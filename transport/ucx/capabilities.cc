#include "transport/ucx/capabilities.h"

#include <algorithm>

#include "transport/ucx/context.h"

namespace rdmaps::transport::ucx {

MemorySupport judge_memory_support(unsigned major, unsigned minor, unsigned release,
                                   std::vector<std::string> memory_types) {
  MemorySupport m;
  m.backend = "UCX";
  m.version = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release);
  m.memory_types = std::move(memory_types);
  const bool cuda = std::find(m.memory_types.begin(), m.memory_types.end(), "cuda") != m.memory_types.end();
  const bool safe = major > kGpuSafeMajor || (major == kGpuSafeMajor && minor >= kGpuSafeMinor);
  if (!cuda) {
    m.device_note = "UCX " + m.version + " handles host memory only (built without CUDA)";
  } else if (!safe) {
    m.device_note = "UCX " + m.version + " reports CUDA memory, but UCX before 1.16 crashes on put/get from GPU memory";
  } else {
    m.device_note = "UCX " + m.version + " handles CUDA memory";
    m.device_memory = true;
  }
  return m;
}

MemorySupport query_memory_support(ucp_context_h context) {
  unsigned major = 0, minor = 0, release = 0;
  ucp_get_version(&major, &minor, &release);
  ucp_context_attr_t attr{};
  attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  const ucs_status_t status = ucp_context_query(context, &attr);
  std::vector<std::string> types;
  if (status == UCS_OK) {
    static const char* const kNames[] = {"host", "cuda", "cuda-managed", "rocm", "rocm-managed"};
    for (int t = 0; t < UCS_MEMORY_TYPE_LAST; ++t)
      if (attr.memory_types & (1ull << t)) types.push_back(t < 5 ? kNames[t] : "type-" + std::to_string(t));
  }
  MemorySupport m = judge_memory_support(major, minor, release, std::move(types));
  if (status != UCS_OK) m.error = std::string("ucp_context_query: ") + ucs_status_string(status);
  return m;
}

MemorySupport probe_memory_support(TransportKind kind) {
  unsigned major = 0, minor = 0, release = 0;
  ucp_get_version(&major, &minor, &release);
  auto failed = [&](const std::string& why) {
    MemorySupport m = judge_memory_support(major, minor, release, {});
    m.error = why;
    return m;
  };
  ucp_config_t* config = nullptr;
  if (ucp_config_read(nullptr, nullptr, &config) != UCS_OK)
    return failed("ucp_config_read failed (check the UCX_* environment)");
  if (kind != TransportKind::kAuto && ucp_config_modify(config, "TLS", transport_tls(kind)) != UCS_OK) {
    ucp_config_release(config);
    return failed(std::string("UCX_TLS=") + transport_tls(kind) + " was refused");
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM;
  ucp_context_h context = nullptr;
  const ucs_status_t status = ucp_init(&params, config, &context);
  ucp_config_release(config);
  if (status != UCS_OK) return failed(std::string("ucp_init: ") + ucs_status_string(status));
  MemorySupport m = query_memory_support(context);
  ucp_cleanup(context);
  return m;
}

}  // namespace rdmaps::transport::ucx
