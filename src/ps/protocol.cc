#include "src/ps/protocol.h"

#include <cmath>
#include <cstdio>
#include <utility>

#include "transport/wire.h"

namespace rdmaps::ps {

using transport::WireReader;
using transport::WireWriter;

namespace {
constexpr uint32_t kHelloTag = 0x4f4c4548;        // "HELO"
constexpr uint32_t kWelcomeTag = 0x4d4c4557;      // "WELM"
constexpr uint32_t kLaneHelloTag = 0x484e414c;    // "LANH"
constexpr uint32_t kLaneWelcomeTag = 0x574e414c;  // "LANW"
constexpr size_t kMaxLanes = 4096;
constexpr size_t kMaxTensors = 1u << 20;
constexpr size_t kMaxName = 4096;
constexpr size_t kMaxRegion = 64 * 1024;

// The rule's float parameters, in wire order: one list for the Config copy,
// the wire, the difference check and the update's parameters (the learning
// rate travels per push, not among them).
struct FloatField {
  const char* name;  // as the flag spells it
  float RuleParams::*wire;
  float Config::*config;
  float math::UpdateParams::*update;  // null: not one of the update's parameters
};
constexpr FloatField kFloatFields[] = {
    {"lr", &RuleParams::learning_rate, &Config::learning_rate, nullptr},
    {"momentum", &RuleParams::momentum, &Config::momentum, &math::UpdateParams::momentum},
    {"lambda", &RuleParams::dc_lambda, &Config::dc_lambda, &math::UpdateParams::lambda},
    {"lambda0", &RuleParams::dc_lambda0, &Config::dc_lambda0, &math::UpdateParams::lambda0},
    {"ms-momentum", &RuleParams::ms_momentum, &Config::ms_momentum, &math::UpdateParams::ms_momentum},
    {"eps", &RuleParams::eps, &Config::eps, &math::UpdateParams::eps},
    {"dc-bound", &RuleParams::dc_bound, &Config::dc_bound, &math::UpdateParams::dc_bound},
    {"dc-tau0", &RuleParams::dc_tau0, &Config::dc_tau0, &math::UpdateParams::dc_tau0},
};
}  // namespace

std::vector<uint8_t> encode(const Hello& h) {
  WireWriter w;
  w.u32(kHelloTag);
  w.u32(h.version);
  w.u32(h.worker);
  w.u32(h.workers);
  w.u64(h.staleness);
  w.u32(h.push_path);
  h.rule.encode(w);
  w.u32(h.rule_stated);
  w.u32(static_cast<uint32_t>(h.tensors.size()));
  for (const auto& t : h.tensors) {
    w.str(t.name);
    w.u64(t.floats);
  }
  return w.take();
}

Hello decode_hello(const std::vector<uint8_t>& bytes, const std::string& peer) {
  WireReader r(bytes, "hello from " + peer);
  if (r.u32() != kHelloTag) r.fail("not a hello message");
  Hello h;
  h.version = r.u32();
  if (h.version != kProtocolVersion)
    r.fail("protocol version " + std::to_string(h.version) + ", this server speaks " +
           std::to_string(kProtocolVersion));
  h.worker = r.u32();
  h.workers = r.u32();
  h.staleness = r.u64();
  h.push_path = r.u32();
  if (h.push_path > 2) r.fail("push path code " + std::to_string(h.push_path));
  h.rule = RuleParams::decode(r);
  h.rule_stated = r.u32();
  if (h.rule_stated > 1) r.fail("rule-stated code " + std::to_string(h.rule_stated));
  uint32_t n = r.u32();
  if (n == 0 || n > kMaxTensors) r.fail(std::to_string(n) + " tensors declared");
  for (uint32_t i = 0; i < n; ++i) {
    TensorDecl t;
    t.name = r.str(kMaxName);
    t.floats = r.u64();
    if (t.name.empty()) r.fail("tensor " + std::to_string(i) + " has no name");
    if (t.floats == 0 || t.floats > (1ull << 40))
      r.fail("tensor '" + t.name + "' of " + std::to_string(t.floats) + " floats");
    h.tensors.push_back(std::move(t));
  }
  r.done();
  return h;
}

std::vector<uint8_t> encode(const Welcome& m) {
  WireWriter w;
  w.u32(kWelcomeTag);
  w.u32(m.accepted);
  w.str(m.reason);
  w.u64(m.range_begin);
  w.u64(m.range_end);
  w.u32(m.shard_floats);
  w.u32(m.inbox_slots);
  w.u32(m.push_path);
  w.u64(m.token);
  w.u32(static_cast<uint32_t>(m.lanes.size()));
  for (const LaneInfo& l : m.lanes) {
    w.u32(l.port);
    w.u32(l.first_shard);
    w.u32(l.shards);
  }
  w.u32(m.resumed);
  w.u64(m.instance);
  w.u64(m.pushes_held);
  return w.take();
}

Welcome decode_welcome(const std::vector<uint8_t>& bytes, const std::string& peer) {
  WireReader r(bytes, "welcome from " + peer);
  if (r.u32() != kWelcomeTag) r.fail("not a welcome message");
  Welcome m;
  m.accepted = r.u32();
  m.reason = r.str(kMaxName);
  m.range_begin = r.u64();
  m.range_end = r.u64();
  m.shard_floats = r.u32();
  m.inbox_slots = r.u32();
  m.push_path = r.u32();
  m.token = r.u64();
  const uint32_t lanes = r.u32();
  if (lanes > kMaxLanes) r.fail(std::to_string(lanes) + " lanes");
  uint32_t next_shard = 0;
  for (uint32_t i = 0; i < lanes; ++i) {
    LaneInfo l;
    l.port = r.u32();
    l.first_shard = r.u32();
    l.shards = r.u32();
    if (l.port == 0 || l.port > 65535 || l.first_shard != next_shard || l.shards == 0)
      r.fail("lane " + std::to_string(i) + " (port " + std::to_string(l.port) + ", shards " +
             std::to_string(l.first_shard) + "+" + std::to_string(l.shards) + ") does not follow the one before");
    next_shard += l.shards;
    m.lanes.push_back(l);
  }
  m.resumed = r.u32();
  if (m.resumed > 1) r.fail("resumed code " + std::to_string(m.resumed));
  m.instance = r.u64();
  m.pushes_held = r.u64();
  r.done();
  if (m.accepted &&
      (m.range_end < m.range_begin || m.shard_floats == 0 || m.inbox_slots == 0 || m.lanes.empty() ||
       (m.push_path != static_cast<uint32_t>(PushPath::kPut) && m.push_path != static_cast<uint32_t>(PushPath::kAm))))
    r.fail("inconsistent range, shard size, lanes or push path");
  return m;
}

std::vector<uint8_t> encode(const LaneHello& h) {
  WireWriter w;
  w.u32(kLaneHelloTag);
  w.u32(kProtocolVersion);
  w.u32(h.worker);
  w.u64(h.token);
  w.u64(h.clock);
  w.bytes(h.receive_region);
  return w.take();
}

LaneHello decode_lane_hello(const std::vector<uint8_t>& bytes, const std::string& peer) {
  WireReader r(bytes, "lane hello from " + peer);
  if (r.u32() != kLaneHelloTag) r.fail("not a lane hello");
  if (uint32_t v = r.u32(); v != kProtocolVersion)
    r.fail("protocol version " + std::to_string(v) + ", this server speaks " + std::to_string(kProtocolVersion));
  LaneHello h;
  h.worker = r.u32();
  h.token = r.u64();
  h.clock = r.u64();
  h.receive_region = r.bytes(kMaxRegion);
  r.done();
  return h;
}

std::vector<uint8_t> encode(const LaneWelcome& m) {
  WireWriter w;
  w.u32(kLaneWelcomeTag);
  w.u32(m.accepted);
  w.str(m.reason);
  w.u64(m.start_clock);
  w.bytes(m.inbox_region);
  return w.take();
}

LaneWelcome decode_lane_welcome(const std::vector<uint8_t>& bytes, const std::string& peer) {
  WireReader r(bytes, "lane welcome from " + peer);
  if (r.u32() != kLaneWelcomeTag) r.fail("not a lane welcome");
  LaneWelcome m;
  m.accepted = r.u32();
  m.reason = r.str(kMaxName);
  m.start_clock = r.u64();
  m.inbox_region = r.bytes(kMaxRegion);
  r.done();
  return m;
}

RuleParams RuleParams::from(const Config& c) {
  RuleParams p;
  p.rule = static_cast<uint32_t>(c.rule);
  for (const FloatField& f : kFloatFields) p.*f.wire = c.*f.config;
  p.ms_bias_correction = c.ms_bias_correction ? 1u : 0u;
  return p;
}

math::UpdateParams RuleParams::update_params() const {
  math::UpdateParams p;
  p.rule = static_cast<UpdateRule>(rule);
  for (const FloatField& f : kFloatFields)
    if (f.update) p.*f.update = this->*f.wire;
  p.ms_bias_correction = ms_bias_correction != 0;
  return p;
}

bool RuleParams::is_flag(std::string_view flag) {
  if (flag == "rule" || flag == "ms-bias-correction") return true;
  for (const FloatField& f : kFloatFields)
    if (flag == f.name) return true;
  return false;
}

void RuleParams::encode(WireWriter& w) const {
  w.u32(rule);
  for (const FloatField& f : kFloatFields) w.f32(this->*f.wire);
  w.u32(ms_bias_correction);
}

RuleParams RuleParams::decode(WireReader& r) {
  RuleParams p;
  p.rule = r.u32();
  if (p.rule > static_cast<uint32_t>(UpdateRule::kDcAsgdAdaptive)) r.fail("update rule code " + std::to_string(p.rule));
  for (const FloatField& f : kFloatFields) {
    p.*f.wire = r.f32();
    if (!std::isfinite(p.*f.wire)) r.fail(std::string("a non-finite update-rule parameter (") + f.name + ")");
  }
  p.ms_bias_correction = r.u32();
  if (p.ms_bias_correction > 1) r.fail("ms-bias-correction code " + std::to_string(p.ms_bias_correction));
  return p;
}

void RuleParams::apply_to(Config& c) const {
  c.rule = static_cast<UpdateRule>(rule);
  for (const FloatField& f : kFloatFields) c.*f.config = this->*f.wire;
  c.ms_bias_correction = ms_bias_correction != 0;
}

std::string RuleParams::difference(const RuleParams& o) const {
  if (rule != o.rule)
    return std::string("rule ") + rule_name(static_cast<UpdateRule>(rule)) + " vs " +
           rule_name(static_cast<UpdateRule>(o.rule));
  auto text = [](float f) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(f));
    return std::string(buf);
  };
  for (const FloatField& f : kFloatFields)
    if (this->*f.wire != o.*f.wire) return std::string(f.name) + " " + text(this->*f.wire) + " vs " + text(o.*f.wire);
  if (ms_bias_correction != o.ms_bias_correction)
    return std::string("ms-bias-correction ") + (ms_bias_correction ? "on" : "off") + " vs " +
           (o.ms_bias_correction ? "on" : "off");
  return {};
}

}  // namespace rdmaps::ps
