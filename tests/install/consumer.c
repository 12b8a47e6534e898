/* A C program using an installed rdmaps (tests/install/check_install.sh): the
 * C API alone, built by a C compiler, as a trainer written in C builds it. */
#include <stdio.h>
#include <string.h>

#include "rdmaps/rdmaps.h"
#include "rdmaps/version.h"

int main(void) {
  if (rdmaps_abi_version() != RDMAPS_ABI_VERSION || strcmp(rdmaps_status_name(RDMAPS_OK), "ok") != 0) {
    fprintf(stderr, "consumer.c: ABI %d, built for %d; status name '%s'\n", rdmaps_abi_version(), RDMAPS_ABI_VERSION,
            rdmaps_status_name(RDMAPS_OK));
    return 1;
  }
  printf("consumer.c: librdmaps ABI %d (%s)\n", rdmaps_abi_version(), rdmaps_build_version());
  return 0;
}
