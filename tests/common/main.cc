// GoogleTest main that doubles as the entry point of test peer processes.
#include <gtest/gtest.h>

#include <cstdlib>

#include "tests/common/peer_process.h"
#include "transport/auth.h"

int main(int argc, char** argv) {
  // Tests run authenticated, as every local launch does; peers inherit the secret.
  setenv("RDMAPS_SECRET", rdmaps::transport::random_secret().c_str(), 0);
  int peer_status = rdmaps::test::run_peer_if_requested(argc, argv);
  if (peer_status >= 0) return peer_status;
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
