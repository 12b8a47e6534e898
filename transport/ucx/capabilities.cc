#include "transport/ucx/capabilities.h"

#include <ucp/api/ucp.h>

namespace rdmaps::transport::ucx {

std::string UcxCapabilities::version() const {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release);
}

UcxCapabilities query_capabilities() {
  UcxCapabilities caps;
  ucp_get_version(&caps.major, &caps.minor, &caps.release);
  ucp_config_t* config = nullptr;
  if (ucp_config_read(nullptr, nullptr, &config) != UCS_OK) {
    caps.error = "ucp_config_read failed (check the UCX_* environment)";
    return caps;
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM;
  ucp_context_h context = nullptr;
  ucs_status_t status = ucp_init(&params, config, &context);
  ucp_config_release(config);
  if (status != UCS_OK) {
    caps.error = std::string("ucp_init: ") + ucs_status_string(status);
    return caps;
  }
  ucp_context_attr_t attr{};
  attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  status = ucp_context_query(context, &attr);
  if (status != UCS_OK) {
    caps.error = std::string("ucp_context_query: ") + ucs_status_string(status);
  } else {
    static const char* const kNames[] = {"host", "cuda", "cuda-managed", "rocm", "rocm-managed"};
    for (int t = 0; t < UCS_MEMORY_TYPE_LAST; ++t) {
      if (!(attr.memory_types & (1ull << t))) continue;
      caps.memory_types.push_back(t < 5 ? kNames[t] : "type-" + std::to_string(t));
      if (t == UCS_MEMORY_TYPE_CUDA) caps.cuda = true;
    }
  }
  ucp_cleanup(context);
  return caps;
}

}  // namespace rdmaps::transport::ucx
