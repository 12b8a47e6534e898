/* Another build's librdmaps, as far as the ABI check sees it: preloaded
 * (LD_PRELOAD), its rdmaps_abi_version and rdmaps_abi_layout answer instead
 * of the real library's, as another build's librdmaps first on
 * LD_LIBRARY_PATH would. OTHER_ABI set: another ABI number; else the same
 * number with another layout (a public struct changed without a bump, the
 * case that crashed: ServerStats grew, the soname stayed). */
#include <stdint.h>

#include "rdmaps/version.h"

int rdmaps_abi_version(void) {
#ifdef OTHER_ABI
  return RDMAPS_ABI_VERSION + 1;
#else
  return RDMAPS_ABI_VERSION;
#endif
}

uint64_t rdmaps_abi_layout(void) { return 1; }
