// Wire formats of the parameter server: inbox slot headers, the worker's
// mailbox, and the set-up messages exchanged over the control channel.
// Layouts are fixed-size and little-endian (x86-64, aarch64).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "math/update_params.h"
#include "rdmaps/config.h"

namespace rdmaps::transport {
class WireReader;
class WireWriter;
}  // namespace rdmaps::transport

namespace rdmaps::ps {

constexpr uint32_t kSlotMagic = 0x50534d52;  // "RMSP"
constexpr uint32_t kProtocolVersion = 19;
/// The longest reconnect window a Hello may carry: what --reconnect accepts (1e12 ms).
constexpr uint64_t kMaxReconnectMs = 1'000'000'000'000;
// A Hello for a worker id the lanes still hold waits this long for them to
// see the earlier connection close: a worker restarted right after it died
// (by a job script, or a launcher) comes back before they noticed. A worker
// whose timeout is shorter hears nothing before it (its message says why).
constexpr std::chrono::seconds kPredecessorWait{3};
/// No worker's clock gets near it (a clock a microsecond for 146,000 years);
/// one carried past it (a lane hello, a lane welcome) is refused: counted on,
/// it wrapped past 2^64 and the worker ran without its staleness bound.
constexpr uint64_t kMaxClock = uint64_t{1} << 62;
/// SlotHeader::flags: the push payload is `length` bfloat16 values.
constexpr uint16_t kFlagBf16 = 1;
/// SlotHeader::flags: the push carries the worker's learning rate, 0 included
/// (a schedule's); without it the server applies its own.
constexpr uint16_t kFlagWorkerRate = 2;

enum class MsgType : uint16_t {
  kPush = 1,   ///< gradient for [offset, offset+length) of a shard
  kClock = 2,  ///< worker finished clock `clock - 1`, now at `clock`
  kPull = 3,   ///< write fresh parameters of shards [shard, shard+count) back
  kInit = 4,   ///< set parameters of a shard range (initial values)
  kBye = 5,    ///< worker leaves cleanly
  /// put path: memory registered after connecting, as landing region `landing`
  /// (1 + index, the next one); payload: its descriptor, `length` bytes
  kLanding = 6,
};

/// First 64 bytes of every inbox slot. The server trusts no field before
/// check_slot() (src/ps/slot_check.h) accepted it.
struct SlotHeader {
  uint32_t magic;
  uint16_t type;
  uint16_t flags;  ///< kFlag* bits
  uint32_t worker;
  uint32_t shard;
  uint64_t seq;           ///< per-worker message number, 1, 2, 3, ...
  uint64_t base_version;  ///< push: shard version the gradient was computed on; pull: floats asked for (0: all)
  uint64_t clock;         ///< worker clock at send (kClock: the new clock)
  uint32_t offset;        ///< push/init/pull: first float within the (first) shard
  uint32_t length;        ///< push/init: floats in the payload; pull: shard count; landing: bytes
  float learning_rate;    ///< push with kFlagWorkerRate: the worker's rate (a scheduler's); otherwise 0
  uint32_t landing;       ///< pull: 1 + which of the worker's landing regions the floats go to (0: its receive region);
                          ///< landing: its number
  uint64_t landing_offset;  ///< pull: the byte of that region the first float asked goes to
};
static_assert(sizeof(SlotHeader) == 64);

/// Inbox slot: header, payload, then the doorbell in its own cache line.
struct SlotLayout {
  size_t payload_bytes;
  size_t payload_offset() const { return sizeof(SlotHeader); }
  size_t doorbell_offset() const { return sizeof(SlotHeader) + round_up(payload_bytes); }
  size_t slot_bytes() const { return doorbell_offset() + 64; }
  static size_t round_up(size_t n) { return (n + 63) / 64 * 64; }
};

/// Written by each server lane into its slot of the worker's receive region;
/// read by the worker.
struct Mailbox {
  uint64_t consumed_seq;  ///< every message up to this seq was consumed: credits
  uint64_t pull_done;     ///< seq of the last pull whose parameters are in place
  uint64_t min_clock;     ///< smallest clock over live workers, as this lane saw them (SSP)
  uint64_t pull_stamp;    ///< min_clock when the last pull was copied
  uint64_t rejected;      ///< this worker's messages the server rejected
  uint64_t landings;      ///< landing regions this lane holds for the worker (put path)
  uint64_t holding;       ///< a worker at min_clock (holding_of()); current once the clock held 1 s
  uint64_t reserved;
};
static_assert(sizeof(Mailbox) == 64);

/// Mailbox::holding: 1 + the worker's id, bit 63 set while it never reached
/// this lane; 0 for none known. Says who an SSP wait waits for.
constexpr uint64_t kHoldingNeverReached = uint64_t{1} << 63;
constexpr uint64_t holding_of(uint32_t worker, bool never_reached) {
  return (uint64_t{worker} + 1) | (never_reached ? kHoldingNeverReached : 0);
}

/// Worker receive region per server: one mailbox per lane, shard versions, parameters.
struct ReceiveLayout {
  size_t lanes;
  size_t shards;
  size_t floats;
  size_t mailbox_offset(size_t lane) const { return lane * sizeof(Mailbox); }
  size_t versions_offset() const { return lanes * sizeof(Mailbox); }
  size_t params_offset() const { return SlotLayout::round_up(versions_offset() + shards * 8); }
  size_t bytes() const { return params_offset() + floats * sizeof(float); }
};

struct TensorDecl {
  std::string name;
  uint64_t floats;
};

/// Longest tensor name a Hello carries (declare() refuses longer ones).
constexpr size_t kMaxTensorName = 4096;
/// The most floats one tensor may have (4 TiB): a Hello naming more is malformed.
constexpr uint64_t kMaxTensorFloats = 1ull << 40;
/// Largest Hello a server reads: a table of about 100,000 tensors with long names.
constexpr size_t kMaxHelloBytes = 16u << 20;
/// Hello::probe of the notice a worker sends on each probe's connection before its Hellos.
constexpr uint32_t kProbeJoining = 2;
/// Most tensors a Hello declares (a server refuses more).
constexpr size_t kMaxTensors = 1u << 20;
/// Most landing regions a LaneHello carries; memory registered beyond them
/// takes the copy from the receive region.
constexpr size_t kMaxLandingRegions = 1024;
/// Shards one server may hold: their indices are 32-bit on the wire, and a
/// version word of 8 bytes each must fit a worker's receive region.
constexpr uint64_t kMaxShardsPerServer = uint64_t{1} << 28;
/// Most slots a worker's inbox has (--inbox-slots): a Welcome saying more is refused.
constexpr uint32_t kMaxInboxSlots = 1024;

/// The update rule a worker was configured with. A server started with
/// rule_from_workers adopts the first worker's and refuses workers that differ.
/// What one of the update rule's float parameters may hold: one definition
/// for the command line (src/api/config.cc) and for a rule a server adopts
/// from its first worker or a checkpoint (ServerOptions::rule_from_workers).
struct RuleParamRange {
  bool (*ok)(double);    ///< whether a value is in range
  const char* expected;  ///< what `ok` accepts, as refusals say it: "a positive number"
  bool off = false;      ///< 0 is allowed too (the command line's "off")
};
/// The range of the float parameter that flag `flag` sets ("lr", "eps", ...);
/// throws Error(kInvalidArgument) for a flag that sets none.
const RuleParamRange& rule_param_range(std::string_view flag);

struct RuleParams {
  uint32_t rule = 0;  ///< UpdateRule
  float learning_rate = 0, momentum = 0, dc_lambda = 0, dc_lambda0 = 0, ms_momentum = 0, eps = 0, dc_bound = 0,
        dc_tau0 = 0;
  uint32_t ms_bias_correction = 0;

  static RuleParams from(const Config& config);
  void apply_to(Config& config) const;
  /// What the update rule itself is given (math/update_params.h).
  math::UpdateParams update_params() const;
  /// Empty when equal, else the first differing field: "lr 0.5 vs 0.25" (this, other).
  std::string difference(const RuleParams& other) const;
  /// Empty when every float parameter is in its range (rule_param_range),
  /// else the first that is not: "eps 0 is not a positive number (--eps)".
  std::string out_of_range() const;
  /// Whether `flag` (as spelled on a command line, without "--") sets the rule or one of its parameters.
  static bool is_flag(std::string_view flag);
  /// The one rule that reads `flag` (momentum; lambda: dc-asgd-c; lambda0,
  /// ms-momentum, eps, dc-bound, dc-tau0, ms-bias-correction: dc-asgd-a), or
  /// nullopt for one every rule reads (lr) or no parameter.
  static std::optional<UpdateRule> rule_of_flag(std::string_view flag);
  /// The wire form, shared by the Hello and the checkpoint file.
  void encode(transport::WireWriter& w) const;
  /// Throws Error(kProtocol) through `r` on an unknown rule or a non-finite parameter.
  static RuleParams decode(transport::WireReader& r);
};

/// Worker -> server, first control message (to the server's listen address).
struct Hello {
  uint32_t version = kProtocolVersion;
  uint32_t worker = 0;
  uint32_t workers = 0;    ///< how many workers the worker was started for (0: not stated)
  uint64_t staleness = 0;  ///< the worker's SSP bound: every worker's must agree
  uint32_t push_path = 0;  ///< PushPath the worker asks for
  RuleParams rule;
  uint32_t rule_stated =
      0;  ///< 1: the worker asked for `rule` (Config::rule_stated); a server applying another refuses it
  /// How long the worker keeps reconnecting when its connections drop
  /// (Config::reconnect_ms): a server whose workers all died waits that long
  /// for them before it counts its job done.
  uint64_t reconnect_ms = 0;
  std::vector<TensorDecl> tensors;
  /// 1: only asks whether this Hello would be admitted, fixing nothing. A
  /// worker of several servers asks each before it joins any: one that
  /// joined some and then failed at another had ended or fixed their job.
  /// kProbeJoining: on a probe's connection, once every server said yes: the
  /// worker joins them now (a close before its Hello is a worker lost).
  uint32_t probe = 0;
  /// A reconnecting worker: Welcome::instance of the server process it had
  /// joined (0: none). Another process admits it only if it resumed from a
  /// checkpoint; one that started empty refuses it (kRefusedWithoutTheJob)
  /// before fixing a table from it.
  uint64_t rejoin_instance = 0;
  /// The job's layout as the worker has it: how many servers, the index it
  /// gives the one it asks, and the shard size (servers 0: not stated). A
  /// probe checks them, so that a worker one server would refuse for its
  /// layout joins none (it joined the others, and was refused after).
  uint32_t servers = 0, server_index = 0, shard_floats = 0;
  /// The job the worker joins: server 0's Welcome::job, from its probe (0 in
  /// a probe). A server holding another job's table refuses it; an empty one
  /// takes it as its own, so every server of a job writes one id in its checkpoints.
  uint64_t job = 0;
};
/// One thread of the server and the shards it owns: the worker connects to
/// each lane at its port (on the server's host) and sends it a LaneHello.
struct LaneInfo {
  uint32_t port = 0;
  uint32_t first_shard = 0, shards = 0;
};
/// Welcome::accepted: refused for good (kRefused: the server's configuration,
/// the worker's request or its protocol version; an older server's every
/// refusal), the worker joined, (to a probe Hello) it would, or refused for
/// now (kRefusedForNow: its earlier connection is still held, no memory):
/// a reconnecting worker retries only the last. kRefusedWithoutTheJob: for
/// good, to a reconnecting worker whose server process went and this one
/// did not resume its job (Hello::rejoin_instance).
constexpr uint32_t kRefused = 0, kAdmitted = 1, kWouldAdmit = 2, kRefusedForNow = 3, kRefusedWithoutTheJob = 4;
/// Welcome::resumed answering a probe: no table yet and nothing resumed; a
/// job's parameters (resumed, or updates applied); a table but no update yet.
constexpr uint32_t kProbeFresh = 0, kProbeHolding = 1, kProbeStarted = 2;
/// Server -> worker answer.
struct Welcome {
  uint32_t accepted = kRefused;  ///< kRefused, kAdmitted, kWouldAdmit, kRefusedForNow or kRefusedWithoutTheJob
  std::string reason;            ///< why not, when not accepted
  uint64_t range_begin = 0, range_end = 0;  ///< global floats this server owns
  uint32_t shard_floats = 0, inbox_slots = 0;
  uint32_t push_path = 0;  ///< PushPath::kPut or kAm for every lane: the server's answer to the worker's ask
  uint64_t token = 0;      ///< proves to the lanes that this server admitted the worker
  std::vector<LaneInfo> lanes;
  /// 1: the server resumed from a checkpoint (docs/cluster.md "Checkpoints
  /// and restarts") and holds the table and its parameters already. In an
  /// answer to a probe, what it holds: kProbeFresh, kProbeHolding, kProbeStarted.
  uint32_t resumed = 0;
  /// Random per server process: a worker reconnecting tells a restarted
  /// server from the same one after a dropped connection.
  uint64_t instance = 0;
  /// Of this worker's pushes (pieces), how many the server's parameters hold
  /// (its checkpoint's, if it resumed, plus those it applied since).
  uint64_t pushes_held = 0;
  /// 1: the server holds a job's parameters as the worker joins (resumed, or
  /// updated by pushes): initial values set now would overwrite a model in training.
  uint32_t holding = 0;
  /// The job this server holds (its table's, a resumed checkpoint's), or,
  /// empty, the id it offers a new one; 0: a checkpoint too old to say.
  /// Servers holding different jobs' parameters are not one job's.
  uint64_t job = 0;
  /// In an answer to a probe, what this server would run the worker with:
  /// its --workers, and the update rule it would apply. Each server checks a
  /// worker against itself only; the worker checks its servers against each other.
  uint32_t workers = 0;
  RuleParams rule;
};
/// Worker -> one lane, after a Welcome.
struct LaneHello {
  uint32_t worker = 0;
  uint64_t token = 0;
  /// The worker's clock: 0 when it starts, its own when it reconnects after
  /// the server restarted (the lane takes the larger of it and its own choice).
  uint64_t clock = 0;
  std::vector<uint8_t> receive_region;  ///< serialized RegionDescriptor (write rights), the whole layout
  /// Serialized RegionDescriptors (write rights) of memory the worker
  /// registered (Client::register_memory) that a pull may ask to be put
  /// straight into, on the put path (docs/protocol.md "Landing in place").
  std::vector<std::vector<uint8_t>> landing_regions;
};
/// Lane -> worker answer.
struct LaneWelcome {
  uint32_t accepted = kRefused;  ///< kRefused, kAdmitted or kRefusedForNow (out of files or memory for it)
  std::string reason;
  uint64_t start_clock = 0;
  std::vector<uint8_t> inbox_region;  ///< serialized RegionDescriptor (write rights): this lane's inbox
};

/// A job id (Hello::job, Welcome::job) as messages name it: 16 hex digits.
std::string job_text(uint64_t job);

std::vector<uint8_t> encode(const Hello& hello);
std::vector<uint8_t> encode(const Welcome& welcome);
std::vector<uint8_t> encode(const LaneHello& hello);
std::vector<uint8_t> encode(const LaneWelcome& welcome);
/// Throw Error(kProtocol) naming `peer` on malformed bytes.
Hello decode_hello(const std::vector<uint8_t>& bytes, const std::string& peer);
Welcome decode_welcome(const std::vector<uint8_t>& bytes, const std::string& peer);
LaneHello decode_lane_hello(const std::vector<uint8_t>& bytes, const std::string& peer);
LaneWelcome decode_lane_welcome(const std::vector<uint8_t>& bytes, const std::string& peer);

}  // namespace rdmaps::ps
