// The programs' first step: refuse another build's librdmaps (one that
// LD_LIBRARY_PATH put first) before it crashes them on its first struct, and
// read RDMAPS_LOG_LEVEL, so that a bad value is said at the start of a run
// that logs nothing (it was said only with the first line logged).
#pragma once

#include <cstdio>
#include <string>

#include "rdmaps/log.h"
#include "rdmaps/version.h"

namespace rdmaps::tools {

/// False, having said why on stderr as `program`, where the loaded librdmaps
/// is not the one this program was built against (rdmaps/version.h).
inline bool program_start(const char* program) {
  const std::string why = abi_mismatch();
  if (!why.empty()) {
    std::fprintf(stderr, "%s: %s\n", program, why.c_str());
    return false;
  }
  static_cast<void>(log_level());
  return true;
}

}  // namespace rdmaps::tools
