// The programs' first step: refuse another build's librdmaps (one that
// LD_LIBRARY_PATH put first) before it crashes them on its first struct, and
// read RDMAPS_LOG_LEVEL, so that a bad value is said at the start of a run
// that logs nothing (it was said only with the first line logged). And their
// last: an error said, whatever its type, never an abort; results that did
// not reach standard output said too, never exit 0.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "rdmaps/version.h"
#include "src/api/cli.h"

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

/// In a program's catch (...): says the exception in flight as `program`'s
/// error (a library's own, or out of memory with `memory_hint`, were aborts
/// with "terminate called"); returns the exit status: 2 for an error of the
/// command line (cli::UsageError), else 1.
inline int report_error(const char* program, const char* memory_hint) {
  try {
    throw;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: error (%s): %s\n", program, errc_name(e.code()), e.what());
    if (dynamic_cast<const cli::UsageError*>(&e)) return cli::kUsageStatus;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: error: out of memory (%s)\n", program, memory_hint);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", program, e.what());
  }
  return 1;
}

/// A program's exit status once it printed its results: `status`, or 1
/// having said why on stderr where standard output did not take them all (a
/// full disk, a closed pipe): `rdmaps-perf --json > file` exited 0 with no data.
inline int program_end(const char* program, int status) {
  errno = 0;
  const bool flushed = std::fflush(stdout) == 0;
  if (flushed && !std::ferror(stdout)) return status;
  std::fprintf(stderr, "%s: error: its output did not reach standard output (%s)\n", program,
               errno != 0 ? std::strerror(errno) : "a write failed");
  return status == 0 ? 1 : status;
}

}  // namespace rdmaps::tools
