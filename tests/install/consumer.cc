// Built against an installed rdmaps through pkg-config: the public headers
// and library are enough to start a server and a worker.
#include <rdmaps/client.h>
#include <rdmaps/server.h>
#include <rdmaps/version.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

int main() {
  // The installed headers and library agree (rdmaps/version.h).
  if (const std::string mismatch = rdmaps::abi_mismatch(); !mismatch.empty()) {
    std::fprintf(stderr, "consumer: %s\n", mismatch.c_str());
    return 1;
  }
  rdmaps::ServerOptions so;
  so.listen = "127.0.0.1:0";
  so.config.transport = "shm";
  so.config.learning_rate = 0.5f;  // update rules run on the server
  rdmaps::Server server(so);
  std::thread serving([&] { server.run(); });
  float last = 0;
  {
    rdmaps::ClientOptions co;
    co.servers = {server.address()};
    co.config.transport = "shm";
    rdmaps::Client client(co);
    client.declare("w", 1000);
    client.connect();
    std::vector<float> w(1000, 1.0f), g(1000, 1.0f);
    client.init("w", w);
    client.push("w", g);
    client.clock();
    client.pull("w", w);
    last = w[999];
  }
  serving.join();
  if (last != 0.5f) {
    std::fprintf(stderr, "consumer: expected 0.5 after one step, got %f\n", last);
    return 1;
  }
  std::printf("consumer: ok (rdmaps %s, ABI %d)\n", rdmaps_build_version(), rdmaps_abi_version());
  return 0;
}
