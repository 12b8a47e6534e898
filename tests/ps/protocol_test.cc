// Wire formats: malformed messages are rejected naming the peer.
#include "src/ps/protocol.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "rdmaps/error.h"
#include "src/ps/admission.h"
#include "src/ps/slot_check.h"
#include "src/ps/write_back.h"
#include "tests/common/output_capture.h"
#include "transport/context.h"

namespace rdmaps::ps {
namespace {

// A write-back mailbox whose offset wraps past the receive region's end (a
// faulty server's, near 2^64) is dropped: offset + size wrapped past the check
// and the mailbox was copied far outside the region.
TEST(WriteBackReceiver, AMailboxOffsetThatWrapsIsDropped) {
  auto context = transport::create_context({.transport = transport::TransportKind::kShm});
  auto receive = context->allocate(4096, transport::Access::kRemoteWrite);
  for (uint64_t offset : {~uint64_t{0} - 8, uint64_t{4096}, uint64_t{4096} - sizeof(Mailbox) + 1}) {
    WriteBackReceiver receiver;
    WriteBackHeader h{offset, 1, 0, {}};
    transport::AmMessage m;
    m.header = &h;
    m.header_length = sizeof(h);
    test::OutputCapture log;
    receiver.on_message(*context, m, *receive, [](uint64_t, uint64_t) { return WriteBackReceiver::Destination{}; });
    receiver.on_message(*context, m, *receive, [](uint64_t, uint64_t) { return WriteBackReceiver::Destination{}; });
    EXPECT_FALSE(receiver.publish(*receive, [](uint64_t, uint64_t, bool) {})) << "offset " << offset;
    // Said once (it was dropped in silence, and the worker's wait named nothing).
    const std::string said = log.end();
    EXPECT_NE(said.find("a write-back from an unknown peer was dropped: a mailbox at byte " + std::to_string(offset) +
                        " of a 4096-byte receive region"),
              std::string::npos)
        << said;
    EXPECT_EQ(said.find("dropped"), said.rfind("dropped")) << said;
  }
  // A header of another size, and a mailbox flag other than 0 or 1.
  for (const char* why : {"a header of 8 bytes, not 80", "mailbox flag 2"}) {
    WriteBackReceiver receiver;
    WriteBackHeader h{0, 2, 0, {}};
    transport::AmMessage m;
    m.header = &h;
    m.header_length = std::string(why).find("header") != std::string::npos ? 8 : sizeof(h);
    test::OutputCapture log;
    receiver.on_message(*context, m, *receive, [](uint64_t, uint64_t) { return WriteBackReceiver::Destination{}; });
    EXPECT_FALSE(receiver.publish(*receive, [](uint64_t, uint64_t, bool) {}));
    const std::string said = log.end();
    EXPECT_NE(said.find(why), std::string::npos) << said;
  }
  // Parameters that would pass the receive region's end, its offset wrapping or not: dropped, said once
  // (the receive refused them as a handler's error, logged for every message).
  for (uint64_t offset : {uint64_t{4090}, ~uint64_t{0} - 4, uint64_t{4097}}) {
    WriteBackReceiver receiver;
    WriteBackHeader h{offset, 0, 0, {}};
    float payload[4] = {1, 2, 3, 4};
    transport::AmMessage m;
    m.header = &h;
    m.header_length = sizeof(h);
    m.payload = payload;
    m.length = sizeof(payload);
    test::OutputCapture log;
    for (int i = 0; i < 2; ++i) {
      transport::AmMessage again = m;
      EXPECT_NO_THROW(receiver.on_message(*context, again, *receive,
                                          [](uint64_t, uint64_t) { return WriteBackReceiver::Destination{}; }));
    }
    EXPECT_FALSE(receiver.publish(*receive, [](uint64_t, uint64_t, bool) { ADD_FAILURE() << "landed"; }));
    const std::string said = log.end();
    EXPECT_NE(said.find("a write-back from an unknown peer was dropped: 16 bytes at byte " + std::to_string(offset) +
                        " of a 4096-byte receive region"),
              std::string::npos)
        << said;
    EXPECT_EQ(said.find("dropped"), said.rfind("dropped")) << said;
  }
  WriteBackReceiver receiver;  // the last mailbox that fits is taken
  WriteBackHeader h{4096 - sizeof(Mailbox), 1, 0, {}};
  h.box.consumed_seq = 7;
  transport::AmMessage m;
  m.header = &h;
  m.header_length = sizeof(h);
  receiver.on_message(*context, m, *receive, [](uint64_t, uint64_t) { return WriteBackReceiver::Destination{}; });
  EXPECT_TRUE(receiver.publish(*receive, [](uint64_t, uint64_t, bool) {}));
  Mailbox got;
  std::memcpy(&got, static_cast<const uint8_t*>(receive->data()) + 4096 - sizeof(Mailbox), sizeof(got));
  EXPECT_EQ(got.consumed_seq, 7u);
}

// A worker whose LaneHello said clock 2^64-1 sent clock 0: taken as the next
// one (it wrapped), and its lane's minimum clock went back, releasing workers
// the staleness bound held.
TEST(SlotCheck, AClockAfterTheLastThereIsIsRefusedNotWrapped) {
  SlotRules r;
  r.worker = 3;
  r.expected_seq = 7;
  r.worker_clock = UINT64_MAX;
  SlotHeader h{};
  h.magic = kSlotMagic;
  h.type = static_cast<uint16_t>(MsgType::kClock);
  h.worker = 3;
  h.seq = 7;
  h.clock = 0;
  EXPECT_EQ(check_slot(h, r), "clock 0 after 18446744073709551615");
  r.worker_clock = 41;
  h.clock = 42;
  EXPECT_EQ(check_slot(h, r), "");
}

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
  // The reconnect window the server waits for a dead worker: read back, and bounded.
  Hello returning = h;
  returning.reconnect_ms = 20000;
  EXPECT_EQ(decode_hello(encode(returning), "peer-7").reconnect_ms, 20000u);
  returning.reconnect_ms = kMaxReconnectMs + 1;
  try {
    decode_hello(encode(returning), "peer-7");
    ADD_FAILURE() << "a reconnect window past its bound was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::kProtocol);
    EXPECT_NE(std::string(e.what()).find("reconnect window of 1000000000001 ms"), std::string::npos) << e.what();
  }
  // A probe (would this Hello be admitted?) and its answer: read back, and only these codes.
  Hello probe = h;
  probe.probe = 1;
  EXPECT_EQ(decode_hello(encode(probe), "peer-7").probe, 1u);
  probe.probe = kProbeJoining;  // the notice on a probe's connection that the worker joins now
  EXPECT_EQ(decode_hello(encode(probe), "peer-7").probe, kProbeJoining);
  probe.probe = kProbeJoining + 1;
  EXPECT_THROW(decode_hello(encode(probe), "peer-7"), Error);
  Hello rejoin = h;
  rejoin.rejoin_instance = 0x1234567890abcdefull;  // a reconnect names the server process it had joined
  EXPECT_EQ(decode_hello(encode(rejoin), "peer-7").rejoin_instance, rejoin.rejoin_instance);
  Welcome yes;
  yes.accepted = kWouldAdmit;
  EXPECT_EQ(decode_welcome(encode(yes), "peer-7").accepted, kWouldAdmit);  // no lanes: nothing was made
  // A refusal says whether a retry may pass (an older server's, code 0, never does).
  Welcome no;
  no.reason = "worker id 0 is already connected";
  for (uint32_t code : {kRefused, kRefusedForNow, kRefusedWithoutTheJob}) {
    no.accepted = code;
    const Welcome refused = decode_welcome(encode(no), "peer-7");
    EXPECT_EQ(refused.accepted, code);
    EXPECT_EQ(refused.reason, no.reason);
  }
  yes.accepted = kRefusedWithoutTheJob + 1;
  EXPECT_THROW(decode_welcome(encode(yes), "peer-7"), Error);
}

// A server of another protocol version answers in its own Welcome layout (a
// protocol-15 one has no `holding`): its refusal reached the worker as
// "truncated at byte N", which a reconnecting worker retried for its whole
// window. Code and reason are read alone, and the refusal is for good; an
// admission in another layout is still an error.
TEST(Protocol, AnotherVersionsRefusalIsReadAsARefusalForGood) {
  Welcome no;
  no.accepted = kRefusedForNow;
  no.reason = "protocol version 17, this server speaks 15";
  std::vector<uint8_t> older = encode(no);
  older.resize(older.size() - 4);  // without `holding`
  const Welcome refused = decode_welcome(older, "peer-7");
  EXPECT_EQ(refused.accepted, kRefused);
  EXPECT_EQ(refused.reason.rfind(no.reason + " (the rest of its answer was not read: ", 0), 0u) << refused.reason;
  std::vector<uint8_t> newer = encode(no);
  newer.insert(newer.end(), {1, 2, 3, 4});  // a later version's field
  EXPECT_EQ(decode_welcome(newer, "peer-7").accepted, kRefused);
  Welcome yes;
  yes.accepted = kAdmitted;
  yes.range_end = 8;
  yes.shard_floats = 8;
  yes.inbox_slots = 2;
  yes.push_path = static_cast<uint32_t>(PushPath::kAm);
  yes.lanes = {LaneInfo{4000, 0, 1}};
  std::vector<uint8_t> cut = encode(yes);
  cut.resize(cut.size() - 4);
  EXPECT_THROW(decode_welcome(cut, "peer-7"), Error);
  EXPECT_EQ(decode_welcome(encode(yes), "peer-7").accepted, kAdmitted);
}

// What a worker sizes and indexes from a server's Welcome is bounded: lane
// shard counts summed in 32 bits wrapped (a lane of 2^32 - 1 shards, then one
// starting there, added up to 2), and the worker wrote its shard table past
// the end; an inbox of 2^32 - 1 slots was allocated per lane; a lane welcome's
// code 7 was taken for accepted. A refusal longer than the reader takes is
// cut, not refused whole (the worker never learned why).
// What decode() refused a message for, or "accepted".
template <typename Decode>
std::string protocol_error(Decode&& decode) {
  try {
    decode();
  } catch (const Error& e) {
    return e.code() == Errc::kProtocol ? e.what() : "another error: " + std::string(e.what());
  }
  return "accepted";
}

TEST(Protocol, AWelcomeIsBoundedBeforeTheWorkerSizesAnythingFromIt) {
  Welcome w;
  w.accepted = kAdmitted;
  w.range_end = 1000;
  w.shard_floats = 256;
  w.inbox_slots = 4;
  w.push_path = static_cast<uint32_t>(PushPath::kPut);
  w.lanes = {{1, 0, 2}, {2, 2, 2}};
  EXPECT_EQ(decode_welcome(encode(w), "peer-7").lanes.size(), 2u);
  const auto refused = [&](const Welcome& bad, const char* says) {
    const std::string what = protocol_error([&] { decode_welcome(encode(bad), "peer-7"); });
    EXPECT_NE(what.find(says), std::string::npos) << what;
  };
  Welcome wraps = w;
  wraps.lanes = {{1, 0, 0xFFFFFFFFu}, {2, 0xFFFFFFFFu, 3}};
  refused(wraps, "lane 0 (port 1, shards 0+4294967295)");
  Welcome holding = w;
  holding.holding = 1;  // a job's parameters held as the worker joins: it sets no initial values
  EXPECT_EQ(decode_welcome(encode(holding), "peer-7").holding, 1u);
  holding.holding = 2;
  refused(holding, "holding code 2");
  Welcome slots = w;
  slots.inbox_slots = kMaxInboxSlots + 1;
  refused(slots, "inconsistent range, shard size, lanes or push path");
  LaneWelcome lane;
  lane.accepted = 7;
  const std::string what = protocol_error([&] { decode_lane_welcome(encode(lane), "peer-7"); });
  EXPECT_NE(what.find("accepted code 7"), std::string::npos) << what;
  Welcome long_no;
  long_no.accepted = kRefused;
  long_no.reason = std::string(5000, 'x');
  EXPECT_EQ(decode_welcome(encode(long_no), "peer-7").reason, std::string(kMaxTensorName, 'x'));
  long_no.reason = std::string(kMaxTensorName - 1, 'x') + "\xc3\xa9";  // an é across the cut goes whole
  EXPECT_EQ(decode_welcome(encode(long_no), "peer-7").reason, std::string(kMaxTensorName - 1, 'x'));
  LaneWelcome long_lane_no;
  long_lane_no.reason = std::string(5000, 'y');
  EXPECT_EQ(decode_lane_welcome(encode(long_lane_no), "peer-7").reason, std::string(kMaxTensorName, 'y'));
  // A clock counted on from near 2^64 wrapped, and the worker ran without its staleness bound.
  LaneWelcome late;
  late.accepted = 1;
  late.start_clock = kMaxClock;
  EXPECT_EQ(decode_lane_welcome(encode(late), "peer-7").start_clock, kMaxClock);
  late.start_clock = UINT64_MAX - 1;
  const std::string wraps_clock = protocol_error([&] { decode_lane_welcome(encode(late), "peer-7"); });
  EXPECT_NE(wraps_clock.find("start clock 18446744073709551614 (at most 2^62)"), std::string::npos) << wraps_clock;
  LaneHello ahead;
  ahead.clock = kMaxClock + 1;
  const std::string ahead_clock = protocol_error([&] { decode_lane_hello(encode(ahead), "peer-7"); });
  EXPECT_NE(ahead_clock.find("clock 4611686018427387905 (at most 2^62)"), std::string::npos) << ahead_clock;
}

// The job's layout a Hello states is one a worker could have: an index below
// the server count, a shard size, no more servers than a job may have.
TEST(Protocol, AHelloOfAnImpossibleLayoutIsRefusedNamingIt) {
  Hello h;
  h.tensors = {{"w", 10}};
  EXPECT_EQ(decode_hello(encode(h), "peer-7").servers, 0u);  // not stated: nothing to check
  h.servers = 3;
  h.server_index = 2;
  h.shard_floats = 1024;
  const Hello back = decode_hello(encode(h), "peer-7");
  EXPECT_EQ(std::tie(back.servers, back.server_index, back.shard_floats),
            std::tie(h.servers, h.server_index, h.shard_floats));
  for (auto [servers, index, shard] : {std::tuple{3u, 3u, 1024u}, {3u, 0u, 0u}, {kMaxServers + 1, 0u, 1024u}}) {
    Hello bad = h;
    std::tie(bad.servers, bad.server_index, bad.shard_floats) = std::tie(servers, index, shard);
    const std::string what = protocol_error([&] { decode_hello(encode(bad), "peer-7"); });
    EXPECT_NE(what.find("a layout of " + std::to_string(servers) + " servers, index " + std::to_string(index)),
              std::string::npos)
        << what;
  }
}

// One definition of what the rule's parameters may hold, for the command
// line and for a rule a server adopts from its first worker: out of range,
// each is refused naming it, as the command line would refuse it (an eps of 0
// or a negative ms-momentum from a worker made the model NaN).
TEST(Protocol, ARuleOutOfRangeIsNotAdoptedNamingTheField) {
  struct Case {
    float RuleParams::*field;
    float value;
    const char* says;
  };
  const Case cases[] = {
      {&RuleParams::learning_rate, 0, "lr 0 is not a positive number (--lr)"},
      {&RuleParams::momentum, 1, "momentum 1 is not in [0, 1) (--momentum)"},
      {&RuleParams::dc_lambda, -1, "lambda -1 is not a number of at least 0 (--lambda)"},
      {&RuleParams::dc_lambda0, -0.5f, "lambda0 -0.5 is not a number of at least 0 (--lambda0)"},
      {&RuleParams::ms_momentum, -0.25f, "ms-momentum -0.25 is not in [0, 1) (--ms-momentum)"},
      {&RuleParams::eps, 0, "eps 0 is not a positive number (--eps)"},
      {&RuleParams::eps, std::numeric_limits<float>::denorm_min(),
       "eps 1.4013e-45 is out of range (a float holds 1.2e-38 to 3.4e38) (--eps)"},
      {&RuleParams::dc_bound, -1, "dc-bound -1 is not a positive bound or off (--dc-bound)"},
      {&RuleParams::dc_tau0, 0.5f, "dc-tau0 0.5 is not a staleness of at least 1 or off (--dc-tau0)"},
  };
  ServerOptions options;
  options.rule_from_workers = true;
  const Admission admission(options);
  Hello valid;
  valid.tensors = {{"w", 10}};
  valid.rule = RuleParams::from(Config{});
  EXPECT_EQ(valid.rule.out_of_range(), "");
  EXPECT_EQ(admission.check(valid), "");
  for (const Case& c : cases) {
    Hello hello = valid;
    hello.rule.*c.field = c.value;
    EXPECT_EQ(hello.rule.out_of_range(), c.says);
    EXPECT_EQ(admission.check(hello), std::string("its update rule cannot be adopted: ") + c.says);
  }
  // "off" is 0 where the command line has it.
  Hello off = valid;
  off.rule.dc_bound = 0;
  off.rule.dc_tau0 = 0;
  EXPECT_EQ(admission.check(off), "");
  // A server with a rule of its own compares, it does not adopt.
  Hello sgd = valid;
  sgd.rule.eps = 0;
  EXPECT_EQ(Admission(ServerOptions{}).check(sgd), "");
  // Then the others must agree with what was adopted, and are told where it
  // came from: the first worker, or the checkpoint the server resumed from.
  Hello other_lr = valid;
  other_lr.rule.learning_rate = 0.5f;
  for (const bool resumed : {false, true}) {
    Admission fixed(options);
    if (resumed)
      fixed.restore(valid.tensors, valid.staleness, fixed.config_for(valid), 0);
    else
      ASSERT_TRUE(fixed.admit(valid));
    const std::string why = fixed.check(other_lr);
    EXPECT_NE(why.find(resumed ? "differs from the resumed checkpoint's (" : "differs from the first worker's ("),
              std::string::npos)
        << why;
  }
  // The command line takes its ranges from the same place.
  EXPECT_FALSE(rule_param_range("eps").ok(0));
  EXPECT_TRUE(rule_param_range("dc-tau0").off);
  EXPECT_THROW(rule_param_range("staleness"), Error);
}

}  // namespace
}  // namespace rdmaps::ps
