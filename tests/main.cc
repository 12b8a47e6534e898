// GoogleTest main that doubles as the entry point of test peer processes.
#include <gtest/gtest.h>

#include "tests/peer_process.h"

int main(int argc, char** argv) {
  int peer_status = rdmaps::test::run_peer_if_requested(argc, argv);
  if (peer_status >= 0) return peer_status;
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
