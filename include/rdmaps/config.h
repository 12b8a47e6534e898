// Configuration shared by servers and workers: consistency bound, update rule
// and its hyper-parameters, transport choices. Binaries fill it from flags and
// RDMAPS_* environment variables (see parse_config).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace rdmaps {

/// Server-side update rule (docs/architecture.md "Update rules").
enum class UpdateRule { kSgd, kMomentum, kDcAsgdConstant, kDcAsgdAdaptive };
/// What to do with a stale gradient (tau = current version - base version).
enum class StalenessPolicy { kNone, kScaleByTau, kDropAboveMax };
/// How a push reaches the inbox: one-sided put, active message, or chosen per
/// endpoint (put where UCX's RMA is native, active message where emulated).
enum class PushPath { kAuto, kPut, kAm };
/// Whether servers put pulls straight into memory given to
/// Client::register_memory(): where the transport writes such memory
/// natively (verbs), everywhere (UCX 1.13 emulates it over shared memory,
/// slower with more than one server thread), or never (docs/protocol.md
/// "Landing in place").
enum class PutLanding { kAuto, kOn, kOff };
/// Element type of pushed gradients on the wire (parameters stay float32).
enum class WireFormat { kF32, kBf16 };
/// How a worker's device memory goes out: straight to the transport where it
/// takes device pointers (auto), or always through pinned host buffers
/// (staged: where the transport takes them but cannot move them well, e.g.
/// no GPUDirect RDMA on the node; docs/cluster.md "GPU workers").
enum class GpuPathChoice { kAuto, kStaged };

constexpr uint64_t kInfiniteStaleness = std::numeric_limits<uint64_t>::max();

struct Config {
  uint64_t staleness = 0;  ///< SSP bound s: 0 = BSP, kInfiniteStaleness = fully asynchronous
  UpdateRule rule = UpdateRule::kSgd;
  float learning_rate = 0.01f;
  float momentum = 0.9f;      ///< momentum rule
  float dc_lambda = 0.04f;    ///< DC-ASGD-c lambda
  float dc_lambda0 = 32.0f;   ///< DC-ASGD-a lambda0 (large: dc_bound keeps the compensation in range)
  float ms_momentum = 0.95f;  ///< DC-ASGD-a mean-square momentum
  float eps = 1e-7f;          ///< DC-ASGD-a epsilon
  /// DC-ASGD-a divides by ms / (1 - ms_momentum^t) at a shard's t-th update (Adam's
  /// bias correction) instead of the paper's ms, which starts at zero (docs/architecture.md
  /// "Update rules"). On by default: without it DC-ASGD-a diverges at its defaults.
  bool ms_bias_correction = true;
  /// DC-ASGD-a: the compensation may change each element's gradient by at most this
  /// many times itself, so at 1 (the default) it never reverses or more than doubles
  /// it; 0 leaves it unbounded, the paper's formula.
  float dc_bound = 1.0f;
  /// DC-ASGD-a: a push more than this many updates stale (tau) steps with
  /// lr * dc_tau0 / tau; 0: every push at lr, the paper's formula.
  float dc_tau0 = 4.0f;
  StalenessPolicy staleness_policy = StalenessPolicy::kNone;
  uint64_t tau_max = 16;   ///< kDropAboveMax limit
  bool check_nan = false;  ///< reject pushes carrying NaN/Inf
  PushPath push_path = PushPath::kAuto;
  PutLanding put_landing = PutLanding::kAuto;  ///< worker, put path: pulls put into registered memory
  WireFormat wire = WireFormat::kF32;          ///< bf16: half the bytes, rounding error fed back on the worker
  std::string transport = "auto";              ///< tcp, shm or auto (UCX_TLS)
  uint32_t shard_floats = 256 * 1024;          ///< floats per shard (1 MiB)
  uint32_t inbox_slots = 4;                    ///< slots per worker inbox ring
  /// Worker: pinned chunks between GPU memory and the network where UCX
  /// cannot read device memory (the staged path), a quarter copied ahead and
  /// the rest sends in flight; 0: 8 MiB's worth (6 MiB in flight).
  uint32_t staging_depth = 0;
  GpuPathChoice gpu_path = GpuPathChoice::kAuto;  ///< worker: device memory direct where possible, or staged
  /// Server threads (lanes), each owning a contiguous part of the server's
  /// shards; 0: one per core the process may use, at most one per shard (one
  /// with gpu_shard).
  uint32_t server_threads = 0;
  /// SSP: skip a pull while the cached copy already holds every update the bound
  /// requires (saves bytes, computes on older copies); off: pull every clock, as async does.
  bool skip_pulls = false;
  /// Shared secret every connection proves both ways before anything else
  /// (docs/security.md); empty: none, allowed on loopback or with --insecure.
  std::string secret;
  /// Worker: how long to keep reconnecting to a server that closed its
  /// connection (it restarts and resumes from a checkpoint); 0: fail at once.
  uint64_t reconnect_ms = 0;
  /// A peer silent this long (its host gone, or the network between cut) is
  /// dead, on every transport: the kernel probes each control connection,
  /// and over tcp UCX's connections too, from half of it on. A partition
  /// shorter than this stalls the job and heals. 0: no probe of the control
  /// connections, and UCX's own keepalive on its tcp ones (about 20 s).
  uint64_t peer_timeout_ms = 120000;
  /// Server: where it writes checkpoints (docs/cluster.md "Checkpoints"); empty: none.
  std::string checkpoint_dir;
  /// Server: a checkpoint this often and/or after this many applied updates
  /// (whichever comes first; 0 = not by that measure).
  uint64_t checkpoint_every_ms = 60000, checkpoint_every_updates = 0;
  uint32_t checkpoint_keep = 2;  ///< newest checkpoints kept per server
  /// Server: start from the newest valid checkpoint in checkpoint_dir, if any.
  bool resume = false;
  /// Worker: the rule and its parameters were asked for (parse_config sets it
  /// when any of their flags is given), so a server applying another refuses
  /// this worker instead of training it with a rule it did not ask for.
  bool rule_stated = false;
  /// Server: the staleness bound was given (`--staleness`, RDMAPS_STALENESS;
  /// parse_config sets it), so workers with another bound are refused. Unset,
  /// the first admitted worker's bound holds for all.
  bool staleness_stated = false;
};

const char* rule_name(UpdateRule rule);
const char* push_path_name(PushPath path);
/// Parses "--name value" flags and RDMAPS_NAME environment variables into
/// `config` (flags win). Unknown flags are left in `rest`, or, without one
/// (nullptr), throw Error(kInvalidArgument) naming the first; bad values throw
/// naming the flag or variable.
void parse_config(Config& config, const std::vector<std::string>& args, std::vector<std::string>* rest);
/// Why `config` is outside what its flags take (a field set in code: an enum
/// value that names nothing, a count or duration past its flag's range, a
/// rule's float outside its range (a momentum of 2, a NaN rate), a secret
/// under 16 bytes), naming the field; "" when it is within. Server and
/// Client refuse such a Config with it.
std::string config_error(const Config& config);
/// One line per field, for start-up banners.
std::string describe(const Config& config);
/// Flags parse_config understands, with a line of help each.
const char* config_help();

}  // namespace rdmaps
