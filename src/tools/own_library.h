// The programs' first step: refuse another build's librdmaps (one that
// LD_LIBRARY_PATH put first) before it crashes them on its first struct.
#pragma once

#include <cstdio>
#include <string>

#include "rdmaps/version.h"

namespace rdmaps::tools {

/// False, having said why on stderr as `program`, where the loaded librdmaps
/// is not the one this program was built against (rdmaps/version.h).
inline bool on_its_own_library(const char* program) {
  const std::string why = abi_mismatch();
  if (!why.empty()) std::fprintf(stderr, "%s: %s\n", program, why.c_str());
  return why.empty();
}

}  // namespace rdmaps::tools
