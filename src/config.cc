#include "rdmaps/config.h"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "rdmaps/error.h"
#include "src/protocol.h"

namespace rdmaps {

const char* rule_name(UpdateRule rule) {
  switch (rule) {
    case UpdateRule::kSgd:
      return "sgd";
    case UpdateRule::kMomentum:
      return "momentum";
    case UpdateRule::kDcAsgdConstant:
      return "dc-asgd-c";
    case UpdateRule::kDcAsgdAdaptive:
      return "dc-asgd-a";
  }
  return "?";
}

const char* push_path_name(PushPath path) {
  switch (path) {
    case PushPath::kAuto:
      return "auto";
    case PushPath::kPut:
      return "put";
    case PushPath::kAm:
      return "am";
  }
  return "?";
}

namespace {

using Setter = std::function<void(Config&, const std::string& value, const std::string& source)>;

constexpr size_t kMinSecret = 16;

std::string checked_secret(const std::string& secret, const std::string& source) {
  if (secret.size() < kMinSecret)
    throw Error(Errc::kInvalidArgument, source + ": a shared secret of " + std::to_string(secret.size()) +
                                            " bytes is too easy to guess; give at least " + std::to_string(kMinSecret) +
                                            " (e.g. openssl rand -hex 32)");
  return secret;
}

// The secret file must be the user's alone, like an ssh key; its first line is the secret.
std::string read_secret_file(const std::string& path, const std::string& source) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Error(Errc::kInvalidArgument,
                source + ": cannot read the secret file '" + path + "': " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    throw Error(Errc::kInvalidArgument, source + ": the secret file '" + path + "' is not a regular file");
  if (st.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw Error(Errc::kInvalidArgument, source + ": the secret file '" + path + "' has mode " + mode +
                                            ": other users may read or change it; chmod 600 '" + path + "'");
  }
  std::ifstream in(path);
  std::string secret;
  if (!in || !std::getline(in, secret))
    throw Error(Errc::kInvalidArgument, source + ": the secret file '" + path + "' is empty or unreadable");
  while (!secret.empty() && (secret.back() == '\r' || secret.back() == ' ')) secret.pop_back();
  return checked_secret(secret, source + " ('" + path + "')");
}

[[noreturn]] void bad(const std::string& source, const std::string& value, const std::string& expected) {
  throw Error(Errc::kInvalidArgument, source + ": '" + value + "' is not " + expected);
}

float to_float(const std::string& v, const std::string& source) {
  char* end = nullptr;
  float f = std::strtof(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(f)) bad(source, v, "a number");
  return f;
}

// A decay factor: 0 <= f < 1 (1 or more would never forget, or grow).
float to_fraction(const std::string& v, const std::string& source) {
  float f = to_float(v, source);
  if (f < 0 || f >= 1) bad(source, v, "in [0, 1)");
  return f;
}

// "off" is 0; anything else must exceed `min` (or equal it when `inclusive`).
float to_float_or_off(const std::string& v, const std::string& source, float min, bool inclusive,
                      const char* expected) {
  if (v == "off") return 0;
  const float f = to_float(v, source);
  if (f < min || (!inclusive && f == min)) bad(source, v, expected);
  return f;
}

bool to_switch(const std::string& v, const std::string& source) {
  if (v == "1" || v == "on" || v == "true") return true;
  if (v == "0" || v == "off" || v == "false") return false;
  bad(source, v, "on or off");
}

// Switches may stand alone ("--check-nan" means on); their setters parse with to_switch.
bool is_switch(const std::string& name) {
  return name == "check-nan" || name == "ms-bias-correction" || name == "skip-pulls" || name == "resume";
}

uint64_t to_u64(const std::string& v, const std::string& source) {
  char* end = nullptr;
  if (v.empty() || v[0] == '-') bad(source, v, "a non-negative integer");
  errno = 0;
  uint64_t n = std::strtoull(v.c_str(), &end, 10);
  if (*end != '\0' || errno == ERANGE) bad(source, v, "a non-negative integer below 2^64");
  return n;
}

// Seconds, "2.5s" or "500ms", to milliseconds.
uint64_t to_millis(const std::string& v, const std::string& source) {
  std::string number = v;
  double scale = 1000;
  if (number.size() > 2 && number.ends_with("ms")) {
    number.resize(number.size() - 2);
    scale = 1;
  } else if (number.size() > 1 && number.back() == 's') {
    number.pop_back();
  }
  char* end = nullptr;
  const double d = std::strtod(number.c_str(), &end);
  if (number.empty() || *end != '\0' || !(d >= 0) || d * scale > 1e12) bad(source, v, "a duration (SEC, SECs or MSms)");
  return static_cast<uint64_t>(d * scale);
}

float to_positive(const std::string& v, const std::string& source) {
  float f = to_float(v, source);
  if (!(f > 0)) bad(source, v, "a positive number");
  return f;
}

float to_non_negative(const std::string& v, const std::string& source) {
  float f = to_float(v, source);
  if (f < 0) bad(source, v, "a number of at least 0");
  return f;
}

const std::map<std::string, Setter>& setters() {
  static const std::map<std::string, Setter> table = {
      {"staleness",
       [](Config& c, const std::string& v, const std::string& s) {
         c.staleness = (v == "inf" || v == "async") ? kInfiniteStaleness : to_u64(v, s);
       }},
      {"rule",
       [](Config& c, const std::string& v, const std::string& s) {
         if (v == "sgd")
           c.rule = UpdateRule::kSgd;
         else if (v == "momentum")
           c.rule = UpdateRule::kMomentum;
         else if (v == "dc-asgd-c")
           c.rule = UpdateRule::kDcAsgdConstant;
         else if (v == "dc-asgd-a")
           c.rule = UpdateRule::kDcAsgdAdaptive;
         else
           bad(s, v, "one of sgd, momentum, dc-asgd-c, dc-asgd-a");
       }},
      {"lr", [](Config& c, const std::string& v, const std::string& s) { c.learning_rate = to_positive(v, s); }},
      {"momentum", [](Config& c, const std::string& v, const std::string& s) { c.momentum = to_fraction(v, s); }},
      {"lambda", [](Config& c, const std::string& v, const std::string& s) { c.dc_lambda = to_non_negative(v, s); }},
      {"lambda0", [](Config& c, const std::string& v, const std::string& s) { c.dc_lambda0 = to_non_negative(v, s); }},
      {"ms-momentum", [](Config& c, const std::string& v, const std::string& s) { c.ms_momentum = to_fraction(v, s); }},
      {"eps",
       [](Config& c, const std::string& v, const std::string& s) {
         c.eps = to_float(v, s);
         if (c.eps <= 0) bad(s, v, "a positive number");
       }},
      {"staleness-policy",
       [](Config& c, const std::string& v, const std::string& s) {
         if (v == "none")
           c.staleness_policy = StalenessPolicy::kNone;
         else if (v == "eta-tau")
           c.staleness_policy = StalenessPolicy::kScaleByTau;
         else if (v == "drop")
           c.staleness_policy = StalenessPolicy::kDropAboveMax;
         else
           bad(s, v, "one of none, eta-tau, drop");
       }},
      {"tau-max", [](Config& c, const std::string& v, const std::string& s) { c.tau_max = to_u64(v, s); }},
      {"check-nan", [](Config& c, const std::string& v, const std::string& s) { c.check_nan = to_switch(v, s); }},
      {"ms-bias-correction",
       [](Config& c, const std::string& v, const std::string& s) { c.ms_bias_correction = to_switch(v, s); }},
      {"dc-bound",
       [](Config& c, const std::string& v, const std::string& s) {
         c.dc_bound = to_float_or_off(v, s, 0, false, "a positive bound or off");
       }},
      {"dc-tau0",
       [](Config& c, const std::string& v, const std::string& s) {
         c.dc_tau0 = to_float_or_off(v, s, 1, true, "a staleness of at least 1 or off");
       }},
      {"skip-pulls", [](Config& c, const std::string& v, const std::string& s) { c.skip_pulls = to_switch(v, s); }},
      {"push-path",
       [](Config& c, const std::string& v, const std::string& s) {
         if (v == "auto")
           c.push_path = PushPath::kAuto;
         else if (v == "put")
           c.push_path = PushPath::kPut;
         else if (v == "am")
           c.push_path = PushPath::kAm;
         else
           bad(s, v, "one of put, am, auto");
       }},
      {"wire",
       [](Config& c, const std::string& v, const std::string& s) {
         if (v == "f32")
           c.wire = WireFormat::kF32;
         else if (v == "bf16")
           c.wire = WireFormat::kBf16;
         else
           bad(s, v, "f32 or bf16");
       }},
      {"transport",
       [](Config& c, const std::string& v, const std::string& s) {
         if (v != "tcp" && v != "shm" && v != "auto") bad(s, v, "one of tcp, shm, auto");
         c.transport = v;
       }},
      {"shard-floats",
       [](Config& c, const std::string& v, const std::string& s) {
         uint64_t n = to_u64(v, s);
         if (n == 0 || n > (1u << 28)) bad(s, v, "a shard size in 1..268435456 floats");
         c.shard_floats = static_cast<uint32_t>(n);
       }},
      {"inbox-slots",
       [](Config& c, const std::string& v, const std::string& s) {
         uint64_t n = to_u64(v, s);
         if (n == 0 || n > 1024) bad(s, v, "a slot count in 1..1024");
         c.inbox_slots = static_cast<uint32_t>(n);
       }},
      {"staging-depth",
       [](Config& c, const std::string& v, const std::string& s) {
         uint64_t n = to_u64(v, s);
         if (n > 64) bad(s, v, "a chunk count in 0..64 (0: auto)");
         c.staging_depth = static_cast<uint32_t>(n);
       }},
      {"secret",
       [](Config& c, const std::string& v, const std::string& s) {
         if (s.rfind("--", 0) == 0)
           throw Error(Errc::kInvalidArgument,
                       "--secret: a secret on the command line is visible to every user of the machine (ps, "
                       "/proc); put it in a file (--secret-file FILE, mode 600) or in RDMAPS_SECRET");
         c.secret = checked_secret(v, s);
       }},
      {"secret-file", [](Config& c, const std::string& v, const std::string& s) { c.secret = read_secret_file(v, s); }},
      {"reconnect", [](Config& c, const std::string& v, const std::string& s) { c.reconnect_ms = to_millis(v, s); }},
      {"checkpoint-dir",
       [](Config& c, const std::string& v, const std::string& s) {
         if (v.empty()) bad(s, v, "a directory");
         c.checkpoint_dir = v;
       }},
      {"checkpoint-every",
       [](Config& c, const std::string& v, const std::string& s) {
         // "N" or "Nu" counts applied updates; "Ns" / "Nms" is time.
         if (!v.empty() && (v.back() == 'u' || std::isdigit(static_cast<unsigned char>(v.back())))) {
           const uint64_t n = to_u64(v.back() == 'u' ? v.substr(0, v.size() - 1) : v, s);
           if (n == 0) bad(s, v, "a positive count of updates (N) or a time (Ns, Nms)");
           c.checkpoint_every_updates = n;
           c.checkpoint_every_ms = 0;
         } else {
           const uint64_t ms = to_millis(v, s);
           if (ms == 0) bad(s, v, "a positive time (Ns, Nms) or count of updates (N)");
           c.checkpoint_every_ms = ms;
           c.checkpoint_every_updates = 0;
         }
       }},
      {"checkpoint-keep",
       [](Config& c, const std::string& v, const std::string& s) {
         const uint64_t n = to_u64(v, s);
         if (n == 0 || n > 1000) bad(s, v, "a count in 1..1000");
         c.checkpoint_keep = static_cast<uint32_t>(n);
       }},
      {"resume", [](Config& c, const std::string& v, const std::string& s) { c.resume = to_switch(v, s); }},
      {"server-threads",
       [](Config& c, const std::string& v, const std::string& s) {
         uint64_t n = v == "auto" ? 0 : to_u64(v, s);
         if (n > 1024) bad(s, v, "a thread count in 1..1024 or auto");
         c.server_threads = static_cast<uint32_t>(n);
       }},
  };
  return table;
}

std::string env_name(const std::string& flag) {
  std::string out = "RDMAPS_";
  for (char ch : flag) out += ch == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return out;
}

}  // namespace

void parse_config(Config& config, const std::vector<std::string>& args, std::vector<std::string>* rest) {
  for (const auto& [name, set] : setters())
    if (const char* v = std::getenv(env_name(name).c_str())) {
      set(config, v, env_name(name));
      config.rule_stated |= ps::RuleParams::is_flag(name);
    }
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    std::string name = arg.rfind("--", 0) == 0 ? arg.substr(2) : "";
    std::string value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    auto it = setters().find(name);
    if (it == setters().end()) {
      if (rest) rest->push_back(arg);
      continue;
    }
    if (!inline_value) {
      if (is_switch(name) && (i + 1 >= args.size() || args[i + 1].rfind("--", 0) == 0)) {
        value = "on";
      } else {
        if (i + 1 >= args.size()) throw Error(Errc::kInvalidArgument, "flag --" + name + " needs a value");
        value = args[++i];
      }
    }
    it->second(config, value, "--" + name);
    config.rule_stated |= ps::RuleParams::is_flag(name);
  }
}

std::string describe(const Config& c) {
  std::ostringstream o;
  o << "staleness " << (c.staleness == kInfiniteStaleness ? std::string("inf") : std::to_string(c.staleness))
    << ", rule " << rule_name(c.rule) << ", lr " << c.learning_rate;
  if (c.rule == UpdateRule::kMomentum) o << ", momentum " << c.momentum;
  if (c.rule == UpdateRule::kDcAsgdConstant) o << ", lambda " << c.dc_lambda;
  if (c.rule == UpdateRule::kDcAsgdAdaptive) {
    auto or_off = [](float v) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(v));
      return v > 0 ? std::string(buf) : std::string("off");
    };
    o << ", lambda0 " << c.dc_lambda0 << ", ms-momentum " << c.ms_momentum << ", eps " << c.eps
      << ", ms-bias-correction " << (c.ms_bias_correction ? "on" : "off") << ", dc-bound " << or_off(c.dc_bound)
      << ", dc-tau0 " << or_off(c.dc_tau0);
  }
  if (c.staleness != kInfiniteStaleness && c.staleness != 0) o << ", skip-pulls " << (c.skip_pulls ? "on" : "off");
  o << ", staleness-policy "
    << (c.staleness_policy == StalenessPolicy::kNone         ? "none"
        : c.staleness_policy == StalenessPolicy::kScaleByTau ? "eta-tau"
                                                             : "drop (tau-max " + std::to_string(c.tau_max) + ")")
    << ", check-nan " << (c.check_nan ? "on" : "off") << ", push-path " << push_path_name(c.push_path) << ", wire "
    << (c.wire == WireFormat::kBf16 ? "bf16" : "f32") << ", transport " << c.transport << ", shard " << c.shard_floats
    << " floats, inbox " << c.inbox_slots << " slots, secret " << (c.secret.empty() ? "none" : "set");
  if (c.reconnect_ms) o << ", reconnect " << c.reconnect_ms / 1000.0 << " s";
  if (!c.checkpoint_dir.empty()) {
    o << ", checkpoints in " << c.checkpoint_dir << " every ";
    if (c.checkpoint_every_updates)
      o << c.checkpoint_every_updates << " updates";
    else
      o << c.checkpoint_every_ms / 1000.0 << " s";
    o << " (keep " << c.checkpoint_keep << ")" << (c.resume ? ", resume" : "");
  }
  return o.str();
}

const char* config_help() {
  return "  --staleness S|inf       SSP bound (0 = BSP, inf = fully asynchronous)   [RDMAPS_STALENESS]\n"
         "  --rule R                sgd, momentum, dc-asgd-c, dc-asgd-a            [RDMAPS_RULE]\n"
         "  --lr X                  learning rate                                   [RDMAPS_LR]\n"
         "  --momentum X            momentum (rule momentum)                        [RDMAPS_MOMENTUM]\n"
         "  --lambda X              DC-ASGD-c lambda                                [RDMAPS_LAMBDA]\n"
         "  --lambda0 X             DC-ASGD-a lambda0 (32)                          [RDMAPS_LAMBDA0]\n"
         "  --ms-momentum X         DC-ASGD-a mean-square momentum                  [RDMAPS_MS_MOMENTUM]\n"
         "  --eps X                 DC-ASGD-a epsilon                               [RDMAPS_EPS]\n"
         "  --ms-bias-correction [on|off]  DC-ASGD-a: ms / (1 - ms-momentum^t) (on)  [RDMAPS_MS_BIAS_CORRECTION]\n"
         "  --dc-bound X|off        DC-ASGD-a: compensation at most X times the gradient (1) [RDMAPS_DC_BOUND]\n"
         "  --dc-tau0 T|off         DC-ASGD-a: pushes tau > T stale step lr*T/tau (4) [RDMAPS_DC_TAU0]\n"
         "  --staleness-policy P    none, eta-tau, drop                             [RDMAPS_STALENESS_POLICY]\n"
         "  --tau-max N             drop limit for --staleness-policy drop          [RDMAPS_TAU_MAX]\n"
         "  --check-nan [on|off]    reject gradients with NaN/Inf                   [RDMAPS_CHECK_NAN]\n"
         "  --push-path P           put, am, auto (put where RMA is native)         [RDMAPS_PUSH_PATH]\n"
         "  --wire W                gradients on the wire: f32, bf16 (half bytes)   [RDMAPS_WIRE]\n"
         "  --transport T           tcp, shm, auto (UCX_TLS)                        [RDMAPS_TRANSPORT]\n"
         "  --shard-floats N        floats per shard (262144)                       [RDMAPS_SHARD_FLOATS]\n"
         "  --inbox-slots N         slots per worker inbox (4)                      [RDMAPS_INBOX_SLOTS]\n"
         "  --staging-depth N       worker: pinned chunks in flight from GPU memory (0: 8 MiB's worth)\n"
         "                                                                          [RDMAPS_STAGING_DEPTH]\n"
         "  --secret-file FILE      shared secret (first line, file mode 600), proved at every connection\n"
         "                          (the secret itself may come in RDMAPS_SECRET)     [RDMAPS_SECRET_FILE]\n"
         "  --server-threads N|auto server threads, each owning part of the shards (auto: one per core)\n"
         "                                                                          [RDMAPS_SERVER_THREADS]\n"
         "  --skip-pulls [on|off]   SSP: skip pulls the bound allows (off: pull every clock) [RDMAPS_SKIP_PULLS]\n"
         "  --reconnect SEC         worker: keep reconnecting to a restarted server this long (0: fail at once)\n"
         "                                                                          [RDMAPS_RECONNECT]\n"
         "  --checkpoint-dir DIR    server: write checkpoints there (none)           [RDMAPS_CHECKPOINT_DIR]\n"
         "  --checkpoint-every T|N  server: every T (60s, 500ms) or N applied updates [RDMAPS_CHECKPOINT_EVERY]\n"
         "  --checkpoint-keep N     server: newest checkpoints kept (2)              [RDMAPS_CHECKPOINT_KEEP]\n"
         "  --resume [on|off]       server: start from the newest valid checkpoint in --checkpoint-dir\n"
         "                                                                          [RDMAPS_RESUME]\n";
}

}  // namespace rdmaps
