/* Which librdmaps this is, and whether it is the one a program was built for.
 *
 * RDMAPS_ABI_VERSION is the library's ABI: the N of its soname,
 * librdmaps.so.N (meson.build reads it from here). Bump it, in the commit
 * that makes the change, whenever a program or the Python extension built
 * before the change could misbehave with the library built after it:
 *   - a field of a public struct or class added, removed, reordered or
 *     retyped (rdmaps/config.h, server.h, client.h, error.h, rdmaps.h), or a
 *     default changed that inline code reads;
 *   - an enum's values renumbered (a new last value is fine);
 *   - a public function removed, or its parameters or return type changed.
 * Adding a function, or changing only what the library does inside, needs
 * no bump. After a bump, librdmaps.so.N+1 is a new file: programs built
 * before it keep loading their own librdmaps.so.N, whatever LD_LIBRARY_PATH
 * says (an HPC module system sets it, and it overrides RUNPATH).
 *
 * The programs and the Python extension also check at start (C++:
 * rdmaps::abi_mismatch(), below), and refuse a library built from other
 * headers instead of crashing in it. The check compares the ABI number and
 * the sizes of the public types; src/api/version.cc fails the build where
 * those sizes change and the number did not. */
#ifndef RDMAPS_VERSION_H
#define RDMAPS_VERSION_H

#define RDMAPS_ABI_VERSION 2

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** RDMAPS_ABI_VERSION as the loaded library was built with it. */
int rdmaps_abi_version(void);
/** The loaded library's rdmaps::abi_layout() (C++ callers compare it). */
uint64_t rdmaps_abi_layout(void);
/** The library's build version: the project version, plus the git commit when
 *  built from a checkout ("0.1.0+g1a2b3c4d5e6f", ".dirty" for uncommitted
 *  changes; a PEP 440 version). */
const char* rdmaps_build_version(void);
/** The path the loaded library was opened from ("" if unknown). */
const char* rdmaps_library_path(void);

#ifdef __cplusplus
}

#include <cstddef>
#include <initializer_list>
#include <string>

#include "rdmaps/client.h"
#include "rdmaps/error.h"
#include "rdmaps/rdmaps.h"
#include "rdmaps/server.h"

namespace rdmaps {

/// The sizes and alignments of the public types, and where the fields of the
/// C option structs lie, folded into one number (FNV-1a): it differs where a
/// field was added to or removed from one of them, as these headers were
/// compiled; in a C struct also one added into padding, which keeps its size
/// (a caller built before would pass the garbage of the padding as the field).
/// No apostrophe in this C++ block: a C89 compiler tokenizes it as well.
constexpr uint64_t abi_layout() {
  uint64_t h = 14695981039346656037ull;
  for (uint64_t v : {sizeof(Config),
                     alignof(Config),
                     sizeof(ServerOptions),
                     sizeof(DurationHistogram),
                     sizeof(ServerStats),
                     alignof(ServerStats),
                     sizeof(Server),
                     sizeof(ClientOptions),
                     sizeof(ClientStats),
                     sizeof(PullTarget),
                     sizeof(Client),
                     sizeof(Error),
                     sizeof(Errc),
                     sizeof(rdmaps_client_options),
                     sizeof(rdmaps_client_stats),
                     sizeof(rdmaps_server_options),
                     sizeof(rdmaps_server_stats),
                     offsetof(rdmaps_client_options, servers),
                     offsetof(rdmaps_client_options, worker),
                     offsetof(rdmaps_client_options, config),
                     offsetof(rdmaps_client_options, timeout_ms),
                     offsetof(rdmaps_server_options, listen),
                     offsetof(rdmaps_server_options, index),
                     offsetof(rdmaps_server_options, servers),
                     offsetof(rdmaps_server_options, workers),
                     offsetof(rdmaps_server_options, config),
                     offsetof(rdmaps_server_options, insecure),
                     offsetof(rdmaps_server_options, max_bytes)}) {
    h = (h ^ v) * 1099511628211ull;
  }
  return h;
}

/// Why a library reporting `library_abi` and `library_layout` cannot serve
/// code compiled from these headers, naming both sides; "" when it can.
/// `library` names it (its path and version).
inline std::string abi_mismatch(int library_abi, uint64_t library_layout, const std::string& library) {
  if (library_abi == RDMAPS_ABI_VERSION && library_layout == abi_layout()) return "";
  auto side = [](int abi, uint64_t layout) {
    return "ABI " + std::to_string(abi) + ", layout " + std::to_string(layout);
  };
  return library + " (" + side(library_abi, library_layout) + ") is not the librdmaps this was built for (" +
         side(RDMAPS_ABI_VERSION, abi_layout()) +
         "): another build's library is first on the search path (LD_LIBRARY_PATH?); use the library of the same "
         "build, or rebuild against this one";
}

/// The same for the library loaded now; "" when it matches these headers.
inline std::string abi_mismatch() {
  return abi_mismatch(rdmaps_abi_version(), rdmaps_abi_layout(),
                      std::string("librdmaps ") + rdmaps_build_version() + " at " + rdmaps_library_path());
}

}  // namespace rdmaps
#endif

#endif /* RDMAPS_VERSION_H */
