// Fuzzing of every parser that reads bytes from the network or a disk before
// anything is trusted: the bootstrap handshake (messages and the server's
// state machine), the set-up messages, region descriptors and packed keys,
// inbox slot headers, checkpoint files and the metrics endpoint's request
// heads (the harness: fuzz_harness.h). Accepted inputs must satisfy the
// parser's promise (a round trip, or the checked bounds).
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <span>

#include "src/metrics/http_reply.h"
#include "src/ps/checkpoint.h"
#include "src/ps/partition.h"
#include "src/ps/protocol.h"
#include "src/ps/slot_check.h"
#include "tests/fuzz/fuzz_harness.h"
#include "transport/auth.h"
#include "transport/bootstrap.h"
#include "transport/context.h"
#include "transport/region.h"
#include "transport/ucx/region.h"

namespace rdmaps::test {
namespace {

using namespace transport;

// ---- seeds ---------------------------------------------------------------------

ps::Hello sample_hello() {
  ps::Hello h;
  h.worker = 3;
  h.push_path = 1;
  h.rule.rule = 3;
  h.rule.learning_rate = 0.1f;
  h.rule.dc_lambda0 = 32;
  h.rule.ms_bias_correction = 1;
  h.tensors = {{"fc1.weight", 100352}, {"fc1.bias", 128}, {"out", 10}};
  return h;
}

RegionDescriptor sample_region() {
  RegionDescriptor d;
  d.base = 0x7f0000001000;
  d.length = 1 << 20;
  d.access = Access::kRemoteWrite;
  d.packed_key.assign(96, 0x5a);
  return d;
}

Bytes as_bytes(const ps::SlotHeader& h) {
  Bytes b(sizeof(h));
  std::memcpy(b.data(), &h, sizeof(h));
  return b;
}

Bytes framed(const std::vector<Bytes>& messages) {  // as they travel: length-prefixed
  Bytes out;
  for (const Bytes& m : messages) {
    uint32_t n = static_cast<uint32_t>(m.size());
    out.insert(out.end(), reinterpret_cast<uint8_t*>(&n), reinterpret_cast<uint8_t*>(&n) + 4);
    out.insert(out.end(), m.begin(), m.end());
  }
  return out;
}

std::map<std::string, Seeds> seeds() {
  std::map<std::string, Seeds> s;
  bootstrap::Open open{bootstrap::kHasSecret, {}};
  for (size_t i = 0; i < open.nonce.size(); ++i) open.nonce[i] = static_cast<uint8_t>(i * 7);
  bootstrap::Proven proven;
  proven.proof.fill(0x11);
  proven.address.assign(180, 0x42);
  bootstrap::Answer ok;
  ok.ok = true;
  ok.address.assign(200, 0x24);
  bootstrap::Answer refused;
  refused.code = Errc::kPermissionDenied;
  refused.reason = "wrong shared secret";
  s["bootstrap"].accepted = {encode(open), encode(proven), encode(ok), encode(refused)};
  bootstrap::Open plain{0, open.nonce};
  // A proof that is not the secret's passes only a server without one; no proof at all passes none.
  s["handshake"] = {{framed({encode(open), encode(proven)}), framed({encode(plain), encode(proven)})},
                    {framed({encode(open)})}};
  ps::Welcome w;
  w.accepted = 1;
  w.range_begin = 0;
  w.range_end = 100490;
  w.shard_floats = 262144;
  w.inbox_slots = 4;
  w.token = 0x1234567890abcdefull;
  w.push_path = static_cast<uint32_t>(PushPath::kAm);
  w.lanes = {{41000, 0, 1}, {41001, 1, 1}};
  ps::Welcome no;
  no.reason = "its declared tensors differ";
  ps::LaneHello lh{3,
                   0x1234567890abcdefull,
                   17,
                   sample_region().serialize(),
                   {sample_region().serialize(), sample_region().serialize()}};
  ps::LaneWelcome lw{1, "", 7, sample_region().serialize()};
  ps::Welcome wraps = w;  // lane shard counts that wrap 32 bits back to 2 (refused)
  wraps.lanes = {{41000, 0, 0xFFFFFFFFu}, {41001, 0xFFFFFFFFu, 3}};
  s["setup"] = {{ps::encode(sample_hello()), ps::encode(w), ps::encode(no), ps::encode(lh), ps::encode(lw)},
                {ps::encode(wraps)}};
  s["region"].accepted = {sample_region().serialize()};
  // Descriptors with keys as UCX packs them here, over tcp and over shared memory.
  for (const auto kind : {TransportKind::kTcp, TransportKind::kShm}) {
    const auto context = create_context({.transport = kind, .loopback_only = true});
    s["region"].accepted.push_back(
        context->allocate(4096, Access::kRemoteWrite)->descriptor(Access::kRemoteWrite).serialize());
  }
  // Shard 1 at version 0 of the lane of every shard: a gradient of version 0, at the worker's own rate.
  ps::SlotHeader push{ps::kSlotMagic, 1, ps::kFlagWorkerRate, 0, 1, 5, 0, 0, 100, 900, 0.1f, 0, 0};
  ps::SlotHeader pull{ps::kSlotMagic, 3, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0};
  ps::SlotHeader landing_pull{ps::kSlotMagic, 3, 0, 0, 0, 5, 1000, 0, 24, 1, 0, 2, 4000};
  ps::SlotHeader clock{ps::kSlotMagic, 2, 0, 0, 0, 5, 0, 1, 0, 0, 0, 0, 0};
  ps::SlotHeader landing_offer{ps::kSlotMagic, 6, 0, 0, 0, 5, 0, 0, 0, 40, 0, 3, 0};
  Bytes offer_on_puts = as_bytes(landing_offer);
  offer_on_puts.insert(offer_on_puts.end(), {0, 1});  // bytes 64, 65: a lane of every shard, a put path
  s["slot"].accepted = {as_bytes(push), as_bytes(pull), as_bytes(clock), as_bytes(landing_pull), offer_on_puts};
  // A checkpoint file's bytes before its SHA-256 (the target appends one, so that mutations reach the parser).
  ps::CheckpointHeader ck;
  ck.index = 1;
  ck.servers = 2;
  ck.shard_floats = 1024;
  ck.staleness = 3;
  ck.rule = sample_hello().rule;
  ck.tensors = sample_hello().tensors;
  ck.sequence = 7;
  ck.unix_ms = 1764900000000;
  ck.versions = {4, 0, 9};
  ck.workers = {{ps::WorkerState::kConnected, 5, 40}, {ps::WorkerState::kGone, 2, 11}, {}};
  ck.earlier_job = 3;
  ck.state_since = {2, 0, 9};
  const std::vector<float> params = {0.5f, -1, 2, 1e-30f, 3, 4}, state = {1, 1, 0, 0, 2, 2};
  for (const bool with_state : {true, false}) {
    Bytes file = ps::encode_checkpoint_header(ck, params.size(), with_state);
    for (const auto* array : {&params, &state}) {
      if (array == &state && !with_state) break;
      const auto* p = reinterpret_cast<const uint8_t*>(array->data());
      file.insert(file.end(), p, p + array->size() * sizeof(float));
    }
    s["checkpoint"].accepted.push_back(std::move(file));
  }
  // A worker clock no worker may start at (was resumed from, and refused every worker that came).
  ps::CheckpointHeader forged = ck;
  forged.workers[0].clock = uint64_t{1} << 63;
  Bytes file = ps::encode_checkpoint_header(forged, params.size(), false);
  file.insert(file.end(), reinterpret_cast<const uint8_t*>(params.data()),
              reinterpret_cast<const uint8_t*>(params.data() + params.size()));
  s["checkpoint"].refused.push_back(std::move(file));
  for (const char* head : {"GET /metrics HTTP/1.1\r\nHost: node7:9100\r\nAccept: text/plain;version=0.0.4",
                           "HEAD /metrics?x=1 HTTP/1.0", "POST /metrics HTTP/1.1\r\nContent-Length: 10",
                           "GET http://node7/metrics HTTP/1.1\r\nTransfer-Encoding: chunked", "GET / HTTP/2.0"})
    s["http"].accepted.push_back(Bytes(head, head + std::strlen(head)));
  return s;
}

// ---- targets ----------------------------------------------------------------------

TEST(Fuzz, BootstrapMessages) {
  fuzz("bootstrap", [](const Bytes& b) -> std::string {
    // Every message kind is tried on every input: each must refuse what is not its own.
    int parsed = 0;
    std::string wrong;
    auto attempt = [&](auto&& parse, auto&& same) {
      try {
        auto m = parse(b, "fuzz");
        ++parsed;
        if (encode(m) != b && !same(m)) wrong = "no round trip";
      } catch (const Error&) {
      }
    };
    attempt(bootstrap::parse_open, [](const auto&) { return false; });
    attempt(bootstrap::parse_proven, [](const auto&) { return false; });
    // A refusal's reason is cut at kMaxReason: the round trip holds up to it.
    attempt(bootstrap::parse_answer, [](const bootstrap::Answer& a) { return !a.ok; });
    if (!parsed) throw Error(Errc::kProtocol, "no message kind accepted it");
    return wrong;
  });
}

// The server's side of the handshake fed the input as the byte stream a peer
// would send, with and without a secret: it must finish, wait or refuse. An
// input is accepted where either finishes (each input tries both: paired by
// its place in the run, the seed meant to finish met the secret).
TEST(Fuzz, ServerHandshakeStateMachine) {
  auto shake = [](const Bytes& b, bool with_secret) -> std::string {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) != 0) throw std::runtime_error("socketpair");
    TcpSocket client(fds[0]);
    bootstrap::ServerHandshake server(TcpSocket(fds[1]), "fuzz", with_secret ? kSecret : "",
                                      std::chrono::steady_clock::now() + std::chrono::seconds(5));
    if (!b.empty() && ::send(client.fd(), b.data(), b.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(b.size()))
      throw std::runtime_error("send");
    ::shutdown(client.fd(), SHUT_WR);
    for (int step = 0; step < 4; ++step) {
      if (server.advance()) {
        // Only a peer that proved the secret gets here: never with one, from random bytes.
        if (with_secret) return "a handshake without the secret completed";
        if (server.client_address().empty() || server.client_address().size() > bootstrap::kMaxAddress)
          return "an address of " + std::to_string(server.client_address().size()) + " bytes passed";
        return {};
      }
    }
    throw Error(Errc::kTimeout, "waiting for more bytes");  // EOF arrives as kPeerGone before this
  };
  fuzz("handshake", [&](const Bytes& b) -> std::string {
    try {
      return shake(b, true);
    } catch (const Error&) {
      return shake(b, false);  // throws where refused without the secret too
    }
  });
}

TEST(Fuzz, SetupMessages) {
  fuzz("setup", [](const Bytes& b) -> std::string {
    int parsed = 0;
    std::string wrong;
    auto attempt = [&](auto&& decode) {
      try {
        auto m = decode(b, "fuzz");
        ++parsed;
        if (ps::encode(m) != b) wrong = "no round trip";
      } catch (const Error&) {
      }
    };
    attempt(ps::decode_hello);
    // A Welcome whole round-trips; one of another version's layout is read
    // as a refusal for good, from its code and reason, saying the rest was not read.
    try {
      const ps::Welcome m = ps::decode_welcome(b, "fuzz");
      ++parsed;
      if (ps::encode(m) != b &&
          (m.accepted != ps::kRefused || m.reason.find(" (the rest of its answer was not read: ") == std::string::npos))
        wrong = "no round trip";
    } catch (const Error&) {
    }
    attempt(ps::decode_lane_hello);
    attempt(ps::decode_lane_welcome);
    // What a worker sizes and indexes from an accepted Welcome is bounded (its
    // lanes' shards summed in 32 bits wrapped, and it wrote past its shard table).
    try {
      const ps::Welcome w = ps::decode_welcome(b, "fuzz");
      uint64_t shards = 0;
      for (const ps::LaneInfo& l : w.lanes) shards += l.shards;
      if (w.accepted == ps::kAdmitted &&
          (shards > ps::kMaxShardsPerServer || w.lanes.back().first_shard + uint64_t{w.lanes.back().shards} != shards ||
           w.inbox_slots > ps::kMaxInboxSlots))
        wrong = "a Welcome past the bounds a worker sizes from";
    } catch (const Error&) {
    }
    try {
      const uint32_t code = ps::decode_lane_welcome(b, "fuzz").accepted;
      if (code != ps::kRefused && code != ps::kAdmitted && code != ps::kRefusedForNow)
        wrong = "a lane welcome code other than 0, 1 and 3";
    } catch (const Error&) {
    }
    if (!parsed) throw Error(Errc::kProtocol, "no message kind accepted it");
    return wrong;
  });
}

TEST(Fuzz, RegionDescriptors) {
  fuzz("region", [](const Bytes& b) -> std::string {
    RegionDescriptor d = RegionDescriptor::parse(b, "fuzz");
    if (d.serialize() != b) return "no round trip";
    if (d.base + d.length < d.base) return "base + length overflows";
    // Its key, before UCX unpacks it (which takes no length): accepted, each
    // domain its map names has its entry inside the key.
    try {
      ucx::check_packed_key(d.packed_key, "fuzz");
    } catch (const Error&) {
      return {};
    }
    uint64_t domains = 0;
    std::memcpy(&domains, d.packed_key.data(), sizeof(domains));
    size_t at = sizeof(domains) + 1;
    for (; domains; domains &= domains - 1) {
      if (at >= d.packed_key.size()) return "a packed key accepted whose map names a domain past its end";
      at += 1 + d.packed_key[at];
    }
    if (at > d.packed_key.size()) return "a packed key accepted whose last domain's entry runs past its end";
    return {};
  });
}

// Accepted headers stay inside the lane: a push or init lies in one of its
// shards, a pull names only its shards.
TEST(Fuzz, InboxSlotHeaders) {
  const ps::Partition partition({{"w", 5000}, {"b", 1000}}, 2, 1024);
  const uint64_t versions[8] = {3, 0, 7, 1, 1, 2, 9, 4};
  const uint32_t shards = partition.shard_count(1);
  fuzz("slot", [&](const Bytes& input) -> std::string {
    Bytes b = input;
    b.resize(sizeof(ps::SlotHeader) + 8);
    ps::SlotHeader h;
    std::memcpy(&h, b.data(), sizeof(h));
    ps::SlotRules r;
    r.worker = 0;
    r.expected_seq = 5;
    r.worker_clock = 0;
    r.partition = &partition;
    r.server = 1;
    r.first_shard = b[64] % 2;  // a lane with one or all of the server's shards
    r.end_shard = shards;
    r.versions = versions;
    // The worker's step 2 covered floats [0, 100) of each of the lane's
    // shards, or it pushed nothing yet.
    std::array<ps::StepCover, 8> stepped;
    for (auto& s : stepped) s.start(2, 0, 100);
    r.worker_step = 2;
    r.stepped = std::span<const ps::StepCover>(stepped).first(b[66] % 2 ? r.end_shard - r.first_shard : 0);
    const uint64_t landing_bytes[2] = {65536, 8000};
    r.landing_bytes = landing_bytes;
    r.puts = b[65] % 2;  // a put path (landing regions may be offered) or not
    r.payload_bytes = 64;
    if (std::string why = ps::check_slot(h, r); !why.empty()) throw Error(Errc::kProtocol, why);
    const auto type = static_cast<ps::MsgType>(h.type);
    // A rate only in a push, and there only with the flag that says it is the worker's.
    const bool rate_flag = h.flags & ps::kFlagWorkerRate;
    if (type != ps::MsgType::kPush && (rate_flag || h.learning_rate != 0)) return "learning rate outside a push";
    if (!rate_flag && h.learning_rate != 0) return "a rate without its flag";
    if (type == ps::MsgType::kPush || type == ps::MsgType::kInit) {
      if (h.shard < r.first_shard || h.shard >= r.end_shard) return "push outside the lane";
      const ps::Range s = partition.shard(1, h.shard);
      if (h.length == 0 || uint64_t{h.offset} + h.length > s.size()) return "push outside its shard";
      if (!std::isfinite(h.learning_rate) || h.learning_rate < 0) return "bad learning rate";
      // Its staleness, version - base, less one for more of a counted step, is not negative.
      const uint64_t version = versions[h.shard - r.first_shard];
      const size_t k = h.shard - r.first_shard;
      const bool continued = k < r.stepped.size() && r.stepped[k].continued_by(2, h.offset, h.offset + h.length);
      if (type == ps::MsgType::kPush && h.base_version + (continued ? 1 : 0) > version) return "negative staleness";
    } else if (type == ps::MsgType::kPull) {
      if (h.shard < r.first_shard || uint64_t{h.shard} + h.length > r.end_shard || h.length == 0)
        return "pull outside the lane";
      const ps::Range from = partition.shard(1, h.shard);
      const uint64_t there = partition.shard(1, h.shard + h.length - 1).end - from.begin;
      if (h.offset >= from.size() || h.offset + h.base_version > there) return "pull of floats outside its shards";
      const uint64_t bytes = (h.base_version ? h.base_version : there - h.offset) * 4;
      const uint64_t room = h.landing && h.landing <= 2 ? landing_bytes[h.landing - 1] : 0;
      if (h.landing > 2 || (h.landing && (h.landing_offset > room || bytes > room - h.landing_offset)))
        return "pull outside its landing region";
      if (!h.landing && h.landing_offset) return "landing offset without a region";
    } else if (type == ps::MsgType::kLanding) {
      if (!r.puts) return "landing region offered on the active-message path";
      if (h.landing != 3) return "landing region offered out of turn";
      if (h.length == 0 || h.length > r.payload_bytes) return "landing descriptor larger than the slot";
      if (h.shard || h.offset || h.base_version || h.landing_offset) return "landing offer with other fields";
    } else if (h.landing || h.landing_offset) {
      return "landing fields outside a pull";
    }
    if (type != ps::MsgType::kPush && type != ps::MsgType::kInit && type != ps::MsgType::kPull &&
        type != ps::MsgType::kClock && type != ps::MsgType::kBye && type != ps::MsgType::kLanding) {
      return "unknown type accepted";
    }
    return {};
  });
}

// A checkpoint file whose SHA-256 holds (a disk's bit flip is caught by it;
// this is what a file written by another release, or by hand, reaches).
// Accepted ones encode back to the same bytes.
TEST(Fuzz, CheckpointFiles) {
  fuzz("checkpoint", [](const Bytes& body) -> std::string {
    Bytes file = body;
    transport::Sha256 digest;
    digest.update(body.data(), body.size());
    const auto sum = digest.finish();
    file.insert(file.end(), sum.begin(), sum.end());
    const ps::Checkpoint c = ps::parse_checkpoint(file, "fuzz");
    if (!c.state.empty() && c.state.size() != c.params.size()) return "state of another size than the parameters";
    for (const auto& w : c.header.workers)
      if (w.clock > ps::kMaxClock) return "a worker clock no worker may start at";
    // A range of no floats reads back without state either way (the writer flags state for a rule that keeps
    // it, floats or not): its flag, the last byte, is the one thing not in the Checkpoint.
    const bool has_state = !c.state.empty() || (c.params.empty() && body.back() == 1);
    uint32_t format = 0;
    std::memcpy(&format, body.data() + 8, sizeof(format));
    if (format != ps::kCheckpointFormat) return {};  // an older format's file is encoded back in the current one
    Bytes again = ps::encode_checkpoint_header(c.header, c.params.size(), has_state);
    for (const auto* array : {&c.params, &c.state}) {
      const auto* p = reinterpret_cast<const uint8_t*>(array->data());
      again.insert(again.end(), p, p + array->size() * sizeof(float));
    }
    if (again == body) return {};
    const auto at = std::mismatch(again.begin(), again.end(), body.begin(), body.end()).first - again.begin();
    return "no round trip: byte " + std::to_string(at) + " of " + std::to_string(body.size()) + " differs";
  });
}

// Whatever a scraper (or anyone who reaches the port) sends, the reply is
// well formed: a status line, printable header lines (nothing of the request
// echoed into them), a Content-Length that is the body's, and the page only
// with 200.
TEST(Fuzz, MetricsRequestHeads) {
  const std::string page = "rdmaps_up 1\n";
  fuzz("http", [&](const Bytes& b) -> std::string {
    const std::string reply =
        metrics::reply_to(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()), [&] { return page; });
    const size_t end = reply.find("\r\n\r\n");
    if (reply.compare(0, 9, "HTTP/1.1 ") != 0 || end == std::string::npos) return "no status line or no head";
    const int status = std::atoi(reply.c_str() + 9);
    if (status < 200 || status > 599) return "status " + std::to_string(status);
    const std::string head = reply.substr(0, end + 2), body = reply.substr(end + 4);
    size_t length = SIZE_MAX;
    for (size_t at = 0; at < head.size();) {
      const size_t eol = head.find("\r\n", at);
      const std::string line = head.substr(at, eol - at);
      for (char c : line)
        if (c < 0x20 || c >= 0x7f) return "a control or non-ASCII byte in the reply's head";
      if (line.rfind("Content-Length: ", 0) == 0) length = std::strtoull(line.c_str() + 16, nullptr, 10);
      at = eol + 2;
    }
    if (length == SIZE_MAX) return "no Content-Length";
    if (!body.empty() && body.size() != length) return "a body of another length than its Content-Length";
    if ((status == 200) != (body == page || (body.empty() && length == page.size())))
      return "the page with status " + std::to_string(status);
    return {};
  });
}

}  // namespace

std::map<std::string, Seeds> parser_seeds() { return seeds(); }

}  // namespace rdmaps::test
