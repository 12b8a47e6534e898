// What rdmaps/version.h's functions report about this library.
#include "rdmaps/version.h"

#include <dlfcn.h>

#include "rdmaps_build_version.h"

// The layout the public headers had when RDMAPS_ABI_VERSION last changed, as
// GCC's libstdc++ on a 64-bit machine lays it out (elsewhere std::string and
// friends differ in size). A build failing here changed a public type: bump
// RDMAPS_ABI_VERSION (rdmaps/version.h says when) and set the number below
// to the new rdmaps::abi_layout(), which the compiler's note prints. (The
// number changed once with no type changing: the C option structs' field
// offsets were folded in; it stayed at ABI 2, whose new field filled padding.)
#if defined(__GLIBCXX__) && _GLIBCXX_USE_CXX11_ABI && __SIZEOF_POINTER__ == 8 && !defined(_GLIBCXX_DEBUG)
static_assert(RDMAPS_ABI_VERSION != 2 || rdmaps::abi_layout() == 5742333779079654381ull,
              "a public type's layout changed: bump RDMAPS_ABI_VERSION (include/rdmaps/version.h)");
#endif

namespace {
// Its address lies in this library, whatever else defines the public names.
void here() {}
}  // namespace

extern "C" {

int rdmaps_abi_version(void) { return RDMAPS_ABI_VERSION; }

uint64_t rdmaps_abi_layout(void) { return rdmaps::abi_layout(); }

const char* rdmaps_build_version(void) { return RDMAPS_BUILD_VERSION; }

const char* rdmaps_library_path(void) {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&here), &info) == 0 || info.dli_fname == nullptr) return "";
  return info.dli_fname;
}
}
