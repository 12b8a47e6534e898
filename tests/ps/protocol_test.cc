// Wire formats: malformed messages are rejected naming the peer.
#include "src/ps/protocol.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "rdmaps/error.h"

namespace rdmaps::ps {
namespace {

TEST(Protocol, MalformedHelloIsRejectedNamingThePeer) {
  Hello h;
  h.worker = 3;
  h.tensors = {{"w", 10}};
  h.rule.ms_bias_correction = 1;
  auto bytes = encode(h);
  Hello back = decode_hello(bytes, "peer-7");
  EXPECT_EQ(back.worker, 3u);
  EXPECT_EQ(back.rule.ms_bias_correction, 1u);
  EXPECT_EQ(back.rule.difference(Hello{}.rule), "ms-bias-correction on vs off");
  Hello bounded = h;
  bounded.rule.dc_bound = 0.5f;
  EXPECT_EQ(decode_hello(encode(bounded), "peer-7").rule.difference(h.rule), "dc-bound 0.5 vs 0");
  bounded.rule.dc_bound = NAN;
  EXPECT_THROW(decode_hello(encode(bounded), "peer-7"), Error);
  EXPECT_EQ(back.tensors[0].name, "w");
  for (size_t cut : {size_t{3}, size_t{12}, bytes.size() - 1}) {
    std::vector<uint8_t> truncated(bytes.begin(), bytes.begin() + static_cast<long>(cut));
    try {
      decode_hello(truncated, "peer-7");
      ADD_FAILURE() << "truncated hello accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::kProtocol);
      EXPECT_NE(std::string(e.what()).find("peer-7"), std::string::npos);
    }
  }
  Hello empty = h;
  empty.tensors.clear();
  EXPECT_THROW(decode_hello(encode(empty), "peer-7"), Error);
  Hello zero = h;
  zero.tensors[0].floats = 0;
  EXPECT_THROW(decode_hello(encode(zero), "peer-7"), Error);
  Hello odd = h;
  odd.rule.ms_bias_correction = 2;
  EXPECT_THROW(decode_hello(encode(odd), "peer-7"), Error);
}

}  // namespace
}  // namespace rdmaps::ps
