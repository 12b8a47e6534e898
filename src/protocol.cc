#include "src/protocol.h"

#include <cmath>
#include <cstdio>
#include <utility>

#include "src/wire.h"

namespace rdmaps::ps {

namespace {
constexpr uint32_t kHelloTag = 0x4f4c4548;    // "HELO"
constexpr uint32_t kWelcomeTag = 0x4d4c4557;  // "WELM"
constexpr size_t kMaxTensors = 1u << 20;
constexpr size_t kMaxName = 4096;
constexpr size_t kMaxRegion = 64 * 1024;
}  // namespace

std::vector<uint8_t> encode(const Hello& h) {
  WireWriter w;
  w.u32(kHelloTag);
  w.u32(h.version);
  w.u32(h.worker);
  w.u64(h.secret_digest);
  w.u32(h.push_path);
  w.u32(h.rule.rule);
  for (float f :
       {h.rule.learning_rate, h.rule.momentum, h.rule.dc_lambda, h.rule.dc_lambda0, h.rule.ms_momentum, h.rule.eps})
    w.f32(f);
  w.u32(h.rule.ms_bias_correction);
  w.u32(static_cast<uint32_t>(h.tensors.size()));
  for (const auto& t : h.tensors) {
    w.str(t.name);
    w.u64(t.floats);
  }
  w.bytes(h.receive_region);
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
  h.secret_digest = r.u64();
  h.push_path = r.u32();
  if (h.push_path > 2) r.fail("push path code " + std::to_string(h.push_path));
  h.rule.rule = r.u32();
  if (h.rule.rule > static_cast<uint32_t>(UpdateRule::kDcAsgdAdaptive))
    r.fail("update rule code " + std::to_string(h.rule.rule));
  for (float* f : {&h.rule.learning_rate, &h.rule.momentum, &h.rule.dc_lambda, &h.rule.dc_lambda0, &h.rule.ms_momentum,
                   &h.rule.eps}) {
    *f = r.f32();
    if (!std::isfinite(*f)) r.fail("a non-finite update-rule parameter");
  }
  h.rule.ms_bias_correction = r.u32();
  if (h.rule.ms_bias_correction > 1) r.fail("ms-bias-correction code " + std::to_string(h.rule.ms_bias_correction));
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
  h.receive_region = r.bytes(kMaxRegion);
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
  w.u64(m.start_clock);
  w.bytes(m.inbox_region);
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
  m.start_clock = r.u64();
  m.inbox_region = r.bytes(kMaxRegion);
  r.done();
  if (m.accepted && (m.range_end < m.range_begin || m.shard_floats == 0 || m.inbox_slots == 0))
    r.fail("inconsistent range or shard size");
  return m;
}

RuleParams RuleParams::from(const Config& c) {
  return {static_cast<uint32_t>(c.rule), c.learning_rate, c.momentum, c.dc_lambda, c.dc_lambda0, c.ms_momentum, c.eps,
          c.ms_bias_correction ? 1u : 0u};
}

void RuleParams::apply_to(Config& c) const {
  c.rule = static_cast<UpdateRule>(rule);
  c.learning_rate = learning_rate;
  c.momentum = momentum;
  c.dc_lambda = dc_lambda;
  c.dc_lambda0 = dc_lambda0;
  c.ms_momentum = ms_momentum;
  c.eps = eps;
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
  const std::pair<const char*, std::pair<float, float>> fields[] = {
      {"lr", {learning_rate, o.learning_rate}},      {"momentum", {momentum, o.momentum}},
      {"lambda", {dc_lambda, o.dc_lambda}},          {"lambda0", {dc_lambda0, o.dc_lambda0}},
      {"ms-momentum", {ms_momentum, o.ms_momentum}}, {"eps", {eps, o.eps}}};
  for (const auto& [name, v] : fields)
    if (v.first != v.second) return std::string(name) + " " + text(v.first) + " vs " + text(v.second);
  if (ms_bias_correction != o.ms_bias_correction)
    return std::string("ms-bias-correction ") + (ms_bias_correction ? "on" : "off") + " vs " +
           (o.ms_bias_correction ? "on" : "off");
  return {};
}

uint64_t secret_digest(const std::string& secret) {
  // FNV-1a: the secret keeps honest-but-misconfigured peers apart; it is not
  // authentication against an attacker on the fabric.
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : secret) h = (h ^ c) * 1099511628211ull;
  return secret.empty() ? 0 : h;
}

}  // namespace rdmaps::ps
