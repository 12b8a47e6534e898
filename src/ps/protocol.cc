#include "src/ps/protocol.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <utility>

#include "rdmaps/error.h"
#include "rdmaps/server.h"
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
constexpr size_t kMaxName = kMaxTensorName;  // and refusal reasons
constexpr size_t kMaxRegion = 64 * 1024;

// What the rule's parameters may hold. The messages are the command line's
// (tests/ps/config_test.cc matches them).
constexpr RuleParamRange kPositive{[](double d) { return d > 0; }, "a positive number"};
constexpr RuleParamRange kAtLeastZero{[](double d) { return d >= 0; }, "a number of at least 0"};
constexpr RuleParamRange kFraction{[](double d) { return d >= 0 && d < 1; }, "in [0, 1)"};
constexpr RuleParamRange kBound{[](double d) { return d > 0; }, "a positive bound or off", true};
constexpr RuleParamRange kTau0{[](double d) { return d >= 1; }, "a staleness of at least 1 or off", true};

// The rule's float parameters, in wire order: one list for the Config copy,
// the wire, the difference and range checks and the update's parameters
// (the learning rate travels per push, not among them).
struct FloatField {
  const char* name;  // as the flag spells it
  float RuleParams::*wire;
  float Config::*config;
  float math::UpdateParams::*update;  // null: not one of the update's parameters
  RuleParamRange range;
};
constexpr FloatField kFloatFields[] = {
    {"lr", &RuleParams::learning_rate, &Config::learning_rate, nullptr, kPositive},
    {"momentum", &RuleParams::momentum, &Config::momentum, &math::UpdateParams::momentum, kFraction},
    {"lambda", &RuleParams::dc_lambda, &Config::dc_lambda, &math::UpdateParams::lambda, kAtLeastZero},
    {"lambda0", &RuleParams::dc_lambda0, &Config::dc_lambda0, &math::UpdateParams::lambda0, kAtLeastZero},
    {"ms-momentum", &RuleParams::ms_momentum, &Config::ms_momentum, &math::UpdateParams::ms_momentum, kFraction},
    {"eps", &RuleParams::eps, &Config::eps, &math::UpdateParams::eps, kPositive},
    {"dc-bound", &RuleParams::dc_bound, &Config::dc_bound, &math::UpdateParams::dc_bound, kBound},
    {"dc-tau0", &RuleParams::dc_tau0, &Config::dc_tau0, &math::UpdateParams::dc_tau0, kTau0},
};

std::string float_text(float f) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(f));
  return buf;
}

// Each message's fields are listed once, in wire order, in a function that
// both writes and reads them: Writer and Reader give the same calls their
// two meanings. What a field may hold is checked after the read, in decode_*.
class Writer {
 public:
  explicit Writer(uint32_t tag) { w_.u32(tag); }
  void u32(uint32_t v) { w_.u32(v); }
  void u64(uint64_t v) { w_.u64(v); }
  void str(const std::string& s, size_t) { w_.str(s); }
  void bytes(const std::vector<uint8_t>& b, size_t) { w_.bytes(b); }
  void rule(const RuleParams& p) { p.encode(w_); }
  template <class T, class Each>
  void list(const std::vector<T>& items, uint32_t, uint32_t, const char*, Each&& each) {
    w_.u32(static_cast<uint32_t>(items.size()));
    for (const T& item : items) each(item);
  }
  std::vector<uint8_t> take() { return w_.take(); }

 private:
  WireWriter w_;
};

class Reader {
 public:
  Reader(const std::vector<uint8_t>& bytes, std::string what, uint32_t tag, const char* not_it)
      : r_(bytes, std::move(what)) {
    if (r_.u32() != tag) r_.fail(not_it);
  }
  void u32(uint32_t& v) { v = r_.u32(); }
  void u64(uint64_t& v) { v = r_.u64(); }
  void str(std::string& s, size_t limit) { s = r_.str(limit); }
  void bytes(std::vector<uint8_t>& b, size_t limit) { b = r_.bytes(limit); }
  void rule(RuleParams& p) { p = RuleParams::decode(r_); }
  /// The count is checked against [min, max] before any element is read, so
  /// a count sizes nothing; `noun` names it in errors ("lanes").
  template <class T, class Each>
  void list(std::vector<T>& items, uint32_t min, uint32_t max, const char* noun, Each&& each) {
    const uint32_t n = r_.u32();
    if (n < min || n > max) r_.fail(std::to_string(n) + " " + noun);
    for (uint32_t i = 0; i < n; ++i) each(items.emplace_back());
  }
  void version() {
    if (uint32_t v = r_.u32(); v != kProtocolVersion)
      r_.fail("protocol version " + std::to_string(v) + ", this server speaks " + std::to_string(kProtocolVersion));
  }
  [[noreturn]] void fail(const std::string& why) { r_.fail(why); }
  void done() { r_.done(); }

 private:
  WireReader r_;
};

template <class Io, class H>
void hello_fields(Io& io, H& h) {
  io.u32(h.worker);
  io.u32(h.workers);
  io.u64(h.staleness);
  io.u32(h.push_path);
  io.rule(h.rule);
  io.u32(h.rule_stated);
  io.u64(h.reconnect_ms);
  io.list(h.tensors, 1, kMaxTensors, "tensors declared", [&](auto& t) {
    io.str(t.name, kMaxName);
    io.u64(t.floats);
  });
  io.u32(h.probe);
  io.u64(h.rejoin_instance);
  io.u32(h.servers);
  io.u32(h.server_index);
  io.u32(h.shard_floats);
  io.u64(h.job);
}

template <class Io, class M>
void welcome_fields(Io& io, M& m) {
  io.u32(m.accepted);
  io.str(m.reason, kMaxName);
  io.u64(m.range_begin);
  io.u64(m.range_end);
  io.u32(m.shard_floats);
  io.u32(m.inbox_slots);
  io.u32(m.push_path);
  io.u64(m.token);
  io.list(m.lanes, 0, kMaxLanes, "lanes", [&](auto& l) {
    io.u32(l.port);
    io.u32(l.first_shard);
    io.u32(l.shards);
  });
  io.u32(m.resumed);
  io.u64(m.instance);
  io.u64(m.pushes_held);
  io.u32(m.holding);
  io.u64(m.job);
  io.u32(m.workers);
  io.rule(m.rule);
}

template <class Io, class H>
void lane_hello_fields(Io& io, H& h) {
  io.u32(h.worker);
  io.u64(h.token);
  io.u64(h.clock);
  io.bytes(h.receive_region, kMaxRegion);
  io.list(h.landing_regions, 0, kMaxLandingRegions, "landing regions", [&](auto& d) { io.bytes(d, kMaxRegion); });
}

template <class Io, class M>
void lane_welcome_fields(Io& io, M& m) {
  io.u32(m.accepted);
  io.str(m.reason, kMaxName);
  io.u64(m.start_clock);
  io.bytes(m.inbox_region, kMaxRegion);
}

}  // namespace

std::string job_text(uint64_t job) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(job));
  return text;
}

std::vector<uint8_t> encode(const Hello& h) {
  Writer w(kHelloTag);
  w.u32(h.version);
  hello_fields(w, h);
  return w.take();
}

Hello decode_hello(const std::vector<uint8_t>& bytes, const std::string& peer) {
  Reader r(bytes, "hello from " + peer, kHelloTag, "not a hello message");
  r.version();
  Hello h;
  hello_fields(r, h);
  if (h.push_path > 2) r.fail("push path code " + std::to_string(h.push_path));
  if (h.rule_stated > 1) r.fail("rule-stated code " + std::to_string(h.rule_stated));
  if (h.probe > kProbeJoining) r.fail("probe code " + std::to_string(h.probe));
  if (h.servers > kMaxServers || (h.servers && (h.server_index >= h.servers || h.shard_floats == 0)))
    r.fail("a layout of " + std::to_string(h.servers) + " servers, index " + std::to_string(h.server_index) +
           ", shards of " + std::to_string(h.shard_floats) + " floats");
  if (h.reconnect_ms > kMaxReconnectMs)
    r.fail("reconnect window of " + std::to_string(h.reconnect_ms) + " ms (at most " + std::to_string(kMaxReconnectMs) +
           ")");
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    const TensorDecl& t = h.tensors[i];
    if (t.name.empty()) r.fail("tensor " + std::to_string(i) + " has no name");
    if (t.floats == 0 || t.floats > kMaxTensorFloats)
      r.fail("tensor '" + t.name + "' of " + std::to_string(t.floats) + " floats (1 to " +
             std::to_string(kMaxTensorFloats) + ")");
  }
  r.done();
  return h;
}

namespace {
// A refusal's reason cut to what the reader takes: one quoting two long
// tensor names was refused whole, and the worker never learned why.
template <class M>
M with_reason_cut(M m) {
  if (m.reason.size() <= kMaxName) return m;
  // At a character's start: half a UTF-8 character made Python's error for it a UnicodeDecodeError.
  size_t n = kMaxName;
  while (n > 0 && (static_cast<unsigned char>(m.reason[n]) & 0xC0) == 0x80) --n;
  m.reason.resize(n);
  return m;
}
}  // namespace

std::vector<uint8_t> encode(const Welcome& m) {
  Writer w(kWelcomeTag);
  const Welcome cut = with_reason_cut(m);
  welcome_fields(w, cut);
  return w.take();
}

namespace {
Welcome decode_welcome_whole(const std::vector<uint8_t>& bytes, const std::string& peer) {
  Reader r(bytes, "welcome from " + peer, kWelcomeTag, "not a welcome message");
  Welcome m;
  welcome_fields(r, m);
  // Summed in 64 bits: in 32 a lane of 2^32 - 1 shards wrapped the next
  // one's start back into range, and the worker indexed its shards past the end.
  uint64_t next_shard = 0;
  for (size_t i = 0; i < m.lanes.size(); ++i) {
    const LaneInfo& l = m.lanes[i];
    if (l.port == 0 || l.port > 65535 || l.first_shard != next_shard || l.shards == 0 ||
        next_shard + l.shards > kMaxShardsPerServer)
      r.fail("lane " + std::to_string(i) + " (port " + std::to_string(l.port) + ", shards " +
             std::to_string(l.first_shard) + "+" + std::to_string(l.shards) + ") does not follow the one before");
    next_shard += l.shards;
  }
  if (m.resumed > kProbeStarted) r.fail("resumed code " + std::to_string(m.resumed));
  if (m.holding > 1) r.fail("holding code " + std::to_string(m.holding));
  if (m.accepted > kRefusedWithoutTheJob) r.fail("accepted code " + std::to_string(m.accepted));
  r.done();
  if (m.accepted == kAdmitted &&
      (m.range_end < m.range_begin || m.shard_floats == 0 || m.inbox_slots == 0 || m.inbox_slots > kMaxInboxSlots ||
       m.lanes.empty() ||
       (m.push_path != static_cast<uint32_t>(PushPath::kPut) && m.push_path != static_cast<uint32_t>(PushPath::kAm))))
    r.fail("inconsistent range, shard size, lanes or push path");
  return m;
}

// A server of another protocol version refuses this worker's Hello in its own
// Welcome layout (protocol 16 added `holding`): read whole, its refusal came
// as "truncated at byte N", and a reconnecting worker retried it for its
// whole window. Its code and reason lead every version's layout, so a
// refusal is read from them alone, and taken as for good.
std::optional<Welcome> refusal_of_another_layout(const std::vector<uint8_t>& bytes, const std::string& peer,
                                                 const std::string& why) {
  Welcome m;
  try {
    Reader r(bytes, "welcome from " + peer, kWelcomeTag, "not a welcome message");
    r.u32(m.accepted);
    r.str(m.reason, kMaxName);
  } catch (const Error&) {
    return std::nullopt;
  }
  if (m.accepted != kRefused && m.accepted != kRefusedForNow && m.accepted != kRefusedWithoutTheJob)
    return std::nullopt;
  m.accepted = kRefused;
  m.reason += " (the rest of its answer was not read: " + why + ")";
  return m;
}
}  // namespace

Welcome decode_welcome(const std::vector<uint8_t>& bytes, const std::string& peer) {
  try {
    return decode_welcome_whole(bytes, peer);
  } catch (const Error& e) {
    if (e.code() != Errc::kProtocol) throw;
    if (auto refusal = refusal_of_another_layout(bytes, peer, e.what())) return *refusal;
    throw;
  }
}

std::vector<uint8_t> encode(const LaneHello& h) {
  Writer w(kLaneHelloTag);
  w.u32(kProtocolVersion);
  lane_hello_fields(w, h);
  return w.take();
}

LaneHello decode_lane_hello(const std::vector<uint8_t>& bytes, const std::string& peer) {
  Reader r(bytes, "lane hello from " + peer, kLaneHelloTag, "not a lane hello");
  r.version();
  LaneHello h;
  lane_hello_fields(r, h);
  r.done();
  if (h.clock > kMaxClock) r.fail("clock " + std::to_string(h.clock) + " (at most 2^62)");
  return h;
}

std::vector<uint8_t> encode(const LaneWelcome& m) {
  Writer w(kLaneWelcomeTag);
  const LaneWelcome cut = with_reason_cut(m);
  lane_welcome_fields(w, cut);
  return w.take();
}

LaneWelcome decode_lane_welcome(const std::vector<uint8_t>& bytes, const std::string& peer) {
  Reader r(bytes, "lane welcome from " + peer, kLaneWelcomeTag, "not a lane welcome");
  LaneWelcome m;
  lane_welcome_fields(r, m);
  r.done();
  if (m.accepted != kRefused && m.accepted != kAdmitted && m.accepted != kRefusedForNow)
    r.fail("accepted code " + std::to_string(m.accepted));  // 7 was taken for accepted
  if (m.start_clock > kMaxClock) r.fail("start clock " + std::to_string(m.start_clock) + " (at most 2^62)");
  return m;
}

const RuleParamRange& rule_param_range(std::string_view flag) {
  for (const FloatField& f : kFloatFields)
    if (flag == f.name) return f.range;
  throw Error(Errc::kInvalidArgument, "rule_param_range(): --" + std::string(flag) + " sets no update-rule parameter");
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

std::optional<UpdateRule> RuleParams::rule_of_flag(std::string_view flag) {
  if (flag == "momentum") return UpdateRule::kMomentum;
  if (flag == "lambda") return UpdateRule::kDcAsgdConstant;
  for (const char* f : {"lambda0", "ms-momentum", "eps", "dc-bound", "dc-tau0", "ms-bias-correction"})
    if (flag == f) return UpdateRule::kDcAsgdAdaptive;
  return std::nullopt;
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
  for (const FloatField& f : kFloatFields)
    if (this->*f.wire != o.*f.wire)
      return std::string(f.name) + " " + float_text(this->*f.wire) + " vs " + float_text(o.*f.wire);
  if (ms_bias_correction != o.ms_bias_correction)
    return std::string("ms-bias-correction ") + (ms_bias_correction ? "on" : "off") + " vs " +
           (o.ms_bias_correction ? "on" : "off");
  return {};
}

std::string RuleParams::out_of_range() const {
  for (const FloatField& f : kFloatFields) {
    const float v = this->*f.wire;
    const std::string what = std::string(f.name) + " " + float_text(v) + " is ";
    const std::string flag = std::string(" (--") + f.name + ")";
    // As the command line refuses them: the lanes flush subnormals to zero
    // (flush_denormals.h), so an eps of 1e-40 would divide by zero there.
    if (!std::isfinite(v) || (v != 0 && std::fabs(v) < std::numeric_limits<float>::min()))
      return what + "out of range (a float holds 1.2e-38 to 3.4e38)" + flag;
    if (!(f.range.off && v == 0) && !f.range.ok(v)) return what + "not " + f.range.expected + flag;
  }
  return {};
}

}  // namespace rdmaps::ps
