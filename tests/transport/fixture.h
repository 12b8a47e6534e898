// Shared set-up for transport tests: the test process listens, peers connect.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tests/common/peer_process.h"
#include "transport/context.h"

namespace rdmaps::test {

using namespace std::chrono_literals;
using transport::Access;
using transport::TransportKind;

inline constexpr auto kSetupTimeout = std::chrono::milliseconds(20000);

/// The kind of rdmaps::Error `f` throws (its message into *what); a test failure if none.
template <typename F>
Errc error_code_of(F&& f, std::string* what = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (what) *what = e.what();
    return e.code();
  }
  ADD_FAILURE() << "expected an rdmaps::Error";
  return Errc::kInternal;
}

class TransportTest : public testing::TestWithParam<TransportKind> {
 protected:
  void SetUp() override {
    context = transport::create_context({.transport = GetParam()});
    listener = context->listen(transport::SockAddr::parse("127.0.0.1:0"));
    seed = fresh_seed();
  }
  int port() const { return listener->address().port(); }
  std::unique_ptr<transport::Endpoint> accept() { return listener->accept(kSetupTimeout); }

  std::unique_ptr<transport::Context> context;  // declared first: destroyed last
  std::unique_ptr<transport::Listener> listener;
  uint64_t seed = 0;
};

/// The peer side: its own context, connected to the test process.
struct PeerSession {
  explicit PeerSession(const PeerArgs& args)
      : context(transport::create_context({.transport = args.transport})),
        endpoint(
            context->connect(transport::SockAddr::parse("127.0.0.1:" + std::to_string(args.port)), kSetupTimeout)) {}
  std::unique_ptr<transport::RemoteRegion> import_remote() {
    return endpoint->import(transport::RegionDescriptor::parse(endpoint->recv_control(kSetupTimeout), "test"));
  }
  std::unique_ptr<transport::Context> context;
  std::unique_ptr<transport::Endpoint> endpoint;
};

// Control messages made of 64-bit words.
inline void send_words(transport::Endpoint& ep, const std::vector<uint64_t>& words) {
  ep.send_control({reinterpret_cast<const uint8_t*>(words.data()), words.size() * 8}, kSetupTimeout);
}
inline std::vector<uint64_t> recv_words(transport::Endpoint& ep) {
  std::vector<uint8_t> bytes = ep.recv_control(kSetupTimeout);
  std::vector<uint64_t> words(bytes.size() / 8);
  if (!words.empty()) std::memcpy(words.data(), bytes.data(), words.size() * 8);
  return words;
}
inline void send_descriptor(transport::Endpoint& ep, const transport::Region& region, Access rights) {
  ep.send_control(region.descriptor(rights).serialize(), kSetupTimeout);
}

inline std::string transport_param_name(const testing::TestParamInfo<TransportKind>& info) {
  return transport::transport_name(info.param);
}

}  // namespace rdmaps::test

#define RDMAPS_INSTANTIATE_OVER_TRANSPORTS(suite)                                                          \
  INSTANTIATE_TEST_SUITE_P(                                                                                \
      Transports, suite,                                                                                   \
      testing::Values(::rdmaps::transport::TransportKind::kTcp, ::rdmaps::transport::TransportKind::kShm), \
      ::rdmaps::test::transport_param_name)
