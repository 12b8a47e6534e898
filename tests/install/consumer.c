/* A C program using an installed rdmaps (tests/install/check_install.sh): the
 * C API alone, built by a C compiler, as a trainer written in C builds it.
 * With "serve" it also starts a server on loopback (UCX, the transport and
 * the server linked in: what a static librdmaps needs beside it). */
#include <stdio.h>
#include <string.h>

#include "rdmaps/rdmaps.h"
#include "rdmaps/version.h"

int main(int argc, char** argv) {
  if (rdmaps_abi_version() != RDMAPS_ABI_VERSION || strcmp(rdmaps_status_name(RDMAPS_OK), "ok") != 0) {
    fprintf(stderr, "consumer.c: ABI %d, built for %d; status name '%s'\n", rdmaps_abi_version(), RDMAPS_ABI_VERSION,
            rdmaps_status_name(RDMAPS_OK));
    return 1;
  }
  printf("consumer.c: librdmaps ABI %d (%s)\n", rdmaps_abi_version(), rdmaps_build_version());
  if (argc > 1 && strcmp(argv[1], "serve") == 0) {
    rdmaps_server_options options;
    rdmaps_server* server = NULL;
    char address[64];
    memset(&options, 0, sizeof(options));
    options.listen = "127.0.0.1:0";
    options.config = "--transport tcp";
    if (rdmaps_server_create(&options, &server) != RDMAPS_OK ||
        rdmaps_server_address(server, address, sizeof(address)) != RDMAPS_OK) {
      fprintf(stderr, "consumer.c: no server: %s\n", rdmaps_last_error());
      rdmaps_server_destroy(server);
      return 1;
    }
    printf("consumer.c: a server listened at %s\n", address);
    rdmaps_server_destroy(server);
  }
  return 0;
}
