#include "rdmaps/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <sstream>

#include "rdmaps/error.h"
#include "src/api/config_flags.h"
#include "src/api/config_text.h"
#include "src/ps/protocol.h"
#include "transport/unique_fd.h"

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

// The secret file must be the user's alone, like an ssh key; its first line
// is the secret. Checked on the file opened (fstat), not on its name first and
// opened after: a file swapped in between passed the check.
std::string read_secret_file(const std::string& path, const std::string& source) {
  auto refused = [&](const std::string& why) {
    return Error(Errc::kInvalidArgument, source + ": the secret file '" + path + "' " + why);
  };
  const transport::UniqueFd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));  // a FIFO must not block
  if (!file.valid()) throw refused(std::string("cannot be read: ") + std::strerror(errno));
  const int fd = file.get();
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw refused(std::string("cannot be read: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw refused("is not a regular file");
  if (st.st_uid != ::geteuid())
    throw refused("belongs to uid " + std::to_string(st.st_uid) + ", not to this user (uid " +
                  std::to_string(::geteuid()) + "), who could read or change it; use a file of your own, mode 600");
  if (st.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw refused(std::string("has mode ") + mode + ": other users may read or change it; chmod 600 '" + path + "'");
  }
  std::string text(4096, '\0');  // the first line: a secret is far shorter
  ssize_t got = 0;
  for (ssize_t n; got < static_cast<ssize_t>(text.size()) &&
                  (n = ::read(fd, text.data() + got, text.size() - static_cast<size_t>(got))) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      throw refused(std::string("cannot be read: ") + std::strerror(errno));
    }
    got += n;
  }
  text.resize(static_cast<size_t>(got));
  const size_t end = text.find('\n');
  // Cut at 4096 bytes, a longer one passed as its first 4096 without a word.
  if (end == std::string::npos && got == 4096)
    throw refused("has a first line over 4095 bytes: no secret is that long");
  std::string secret = text.substr(0, end);
  if (secret.empty())
    throw refused(got == 0 ? "is empty" : "has an empty first line: the secret goes on the first line");
  while (!secret.empty() && (secret.back() == '\r' || secret.back() == ' ')) secret.pop_back();
  return checked_secret(secret, source + " ('" + path + "')");
}

// Seconds, "2.5s" or "500ms", to milliseconds; nullopt if `v` is none of these.
std::optional<uint64_t> to_millis(const std::string& v) {
  std::string number = v;
  double scale = 1000;
  if (number.size() > 2 && number.ends_with("ms")) {
    number.resize(number.size() - 2);
    scale = 1;
  } else if (number.size() > 1 && number.back() == 's') {
    number.pop_back();
  }
  double d = 0;
  if (!cli::parse_real(number, d) || !(d >= 0) || d * scale > 1e12) return std::nullopt;
  // Under a millisecond is not 0, which means off (--peer-timeout 0.5ms was UCX's 20 s);
  // nor is a value strtod takes to 0 (1e-400).
  if (d > 0 && d * scale < 1) return std::nullopt;
  if (d == 0 && number.find_first_of("123456789") < number.find_first_of("eE")) return std::nullopt;
  return static_cast<uint64_t>(d * scale);
}

CLI::Validator duration() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        return to_millis(v) ? "" : "'" + v + "' is not a duration (SEC, SECs or MSms; 0, or at least 1 ms)";
      },
      "");
}

// Milliseconds as --reconnect and --checkpoint-every read them back.
std::string duration_text(uint64_t ms) {
  return ms % 1000 == 0 ? std::to_string(ms / 1000) + "s" : std::to_string(ms) + "ms";
}

// A DC-ASGD-a limit as its flag reads it: 0 is "off".
std::string or_off(float v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(v));
  return v > 0 ? std::string(buf) : std::string("off");
}

// "N" or "Nu" counts applied updates; "Ns" / "Nms" is time.
bool counts_updates(const std::string& v) {
  return !v.empty() && (v.back() == 'u' || std::isdigit(static_cast<unsigned char>(v.back())));
}

template <typename E>
CLI::Option* add_enum(CLI::App& app, const std::string& name, E& target,
                      const std::vector<std::pair<std::string, E>>& values, const std::string& help) {
  std::vector<std::string> names;
  std::string default_name;  // --help shows the value `target` has now
  for (const auto& [n, e] : values) {
    names.push_back(n);
    if (e == target) default_name = n;
  }
  return app
      .add_option_function<std::string>(
          name,
          [&target, values](const std::string& v) {
            for (const auto& [n, e] : values)
              if (n == v) target = e;
          },
          help)
      ->check(cli::one_of(names))
      ->type_name(CLI::detail::join(names, "|"))
      ->default_str(default_name);
}

const char* const kConfigGroup = "Parameter-server configuration (servers and workers)";

std::string env_name(const std::string& flag) {
  std::string out = "RDMAPS_";
  for (char ch : flag) out += ch == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return out;
}

}  // namespace

std::vector<CLI::Option*> add_config_flags(CLI::App& app, Config& config, const ConfigFlagSelection& select) {
  std::vector<CLI::Option*> added;
  // Each flag is added only if selected; `add` returns the option or nullptr.
  auto wanted = [&](const std::string& name) {
    return (select.only.empty() || select.only.count(name)) && !select.except.count(name);
  };
  auto finish = [&](CLI::Option* o, const std::string& name) {
    o->envname(env_name(name))->group(kConfigGroup);
    if (ps::RuleParams::is_flag(name)) o->each([&config](const std::string&) { config.rule_stated = true; });
    added.push_back(o);
    return o;
  };
  auto option = [&](const std::string& name, auto& target, const std::string& help, CLI::Validator check) {
    // transform, not check: cli::count() hands its value on in decimal (CLI11 read 010 as octal).
    if (wanted(name))
      finish(app.add_option("--" + name, target, help)->transform(std::move(check))->capture_default_str(), name);
  };
  // `shown`: the default as the flag would spell it, from `config` as it is now
  // (CLI11 cannot capture it: the setter, not a variable, takes the value).
  auto function = [&](const std::string& name, std::function<void(const std::string&)> set, const std::string& help,
                      CLI::Validator check, const std::string& type, const std::string& shown) {
    if (wanted(name))
      finish(app.add_option_function<std::string>("--" + name, std::move(set), help)
                 ->check(check)
                 ->type_name(type)
                 ->default_str(shown),
             name);
  };
  auto switch_ = [&](const std::string& name, bool& target, const std::string& help) {
    if (wanted(name)) finish(cli::add_switch(app, "--" + name, target, help), name);
  };
  // The update rule's parameters: the ranges a server checks a rule it
  // adopts from a worker against (ps::rule_param_range), "off" where 0 is one.
  auto rule_check = [](const std::string& name) {
    const ps::RuleParamRange& range = ps::rule_param_range(name);
    const CLI::Validator number = cli::number(range.ok, range.expected);
    return range.off ? cli::word_or("off", number, range.expected) : number;
  };

  function(
      "staleness",
      [&config](const std::string& v) {
        config.staleness = v == "inf" || v == "async" ? kInfiniteStaleness : std::stoull(v);
        config.staleness_stated = true;
      },
      "SSP bound (0 = BSP, inf or async = fully asynchronous)",
      cli::word_or("async", cli::word_or("inf", cli::count(0), "a whole number, inf or async"),
                   "a whole number, inf or async"),
      "S|inf", config.staleness == kInfiniteStaleness ? "inf" : std::to_string(config.staleness));
  if (wanted("rule"))
    finish(add_enum(app, "--rule", config.rule,
                    {{"sgd", UpdateRule::kSgd},
                     {"momentum", UpdateRule::kMomentum},
                     {"dc-asgd-c", UpdateRule::kDcAsgdConstant},
                     {"dc-asgd-a", UpdateRule::kDcAsgdAdaptive}},
                    "update rule"),
           "rule");
  option("lr", config.learning_rate, "learning rate", rule_check("lr"));
  option("momentum", config.momentum, "momentum (rule momentum)", rule_check("momentum"));
  option("lambda", config.dc_lambda, "DC-ASGD-c lambda", rule_check("lambda"));
  option("lambda0", config.dc_lambda0, "DC-ASGD-a lambda0", rule_check("lambda0"));
  option("ms-momentum", config.ms_momentum, "DC-ASGD-a mean-square momentum", rule_check("ms-momentum"));
  option("eps", config.eps, "DC-ASGD-a epsilon", rule_check("eps"));
  switch_("ms-bias-correction", config.ms_bias_correction, "DC-ASGD-a: divide by ms / (1 - ms-momentum^t)");
  function(
      "dc-bound",
      [&config](const std::string& v) { config.dc_bound = v == "off" ? 0 : static_cast<float>(std::stod(v)); },
      "DC-ASGD-a: the compensation changes a gradient by at most X times itself", rule_check("dc-bound"), "X|off",
      or_off(config.dc_bound));
  function(
      "dc-tau0",
      [&config](const std::string& v) { config.dc_tau0 = v == "off" ? 0 : static_cast<float>(std::stod(v)); },
      "DC-ASGD-a: pushes tau > T stale step lr*T/tau", rule_check("dc-tau0"), "T|off", or_off(config.dc_tau0));
  if (wanted("staleness-policy"))
    finish(add_enum(app, "--staleness-policy", config.staleness_policy,
                    {{"none", StalenessPolicy::kNone},
                     {"eta-tau", StalenessPolicy::kScaleByTau},
                     {"drop", StalenessPolicy::kDropAboveMax}},
                    "what to do with stale gradients"),
           "staleness-policy");
  option("tau-max", config.tau_max, "drop limit for --staleness-policy drop", cli::count(0));
  switch_("check-nan", config.check_nan, "reject gradients with NaN/Inf");
  if (wanted("push-path"))
    finish(add_enum(app, "--push-path", config.push_path,
                    {{"put", PushPath::kPut}, {"am", PushPath::kAm}, {"auto", PushPath::kAuto}},
                    "how pushes travel (a worker's ask; auto: put where RMA is native; a server's only plans "
                    "memory for it)"),
           "push-path");
  if (wanted("put-landing"))
    finish(add_enum(app, "--put-landing", config.put_landing,
                    {{"auto", PutLanding::kAuto}, {"on", PutLanding::kOn}, {"off", PutLanding::kOff}},
                    "pulls put straight into registered memory (auto: where the transport writes it natively)"),
           "put-landing");
  if (wanted("wire"))
    finish(add_enum(app, "--wire", config.wire, {{"f32", WireFormat::kF32}, {"bf16", WireFormat::kBf16}},
                    "gradients on the wire (bf16: half the bytes)"),
           "wire");
  option("transport", config.transport, "UCX transports (auto: UCX_TLS)", cli::one_of({"tcp", "shm", "auto"}));
  option("shard-floats", config.shard_floats, "floats per shard", cli::count(1, 1u << 28));
  option("inbox-slots", config.inbox_slots, "slots per worker inbox", cli::count(1, 1024));
  if (wanted("gpu-path"))
    finish(add_enum(app, "--gpu-path", config.gpu_path,
                    {{"auto", GpuPathChoice::kAuto}, {"staged", GpuPathChoice::kStaged}},
                    "worker: device memory straight to the transport where it takes it (auto), or always "
                    "through pinned host buffers (staged)"),
           "gpu-path");
  option("staging-depth", config.staging_depth,
         "worker: pinned chunks between GPU memory and the network, a quarter copied ahead (0: 8 MiB's worth)",
         cli::count(0, 64));
  function(
      "secret",
      [](const std::string&) {
        throw CLI::ValidationError(
            "--secret: a secret on the command line is visible to every user of the machine (ps, /proc); put it in "
            "a file (--secret-file FILE, mode 600) or in RDMAPS_SECRET");
      },
      "refused: use --secret-file or RDMAPS_SECRET", CLI::Validator(), "SECRET", "");
  if (!added.empty() && added.back()->get_name() == "--secret") {
    added.back()->envname("");  // RDMAPS_SECRET is read by the final callback, where a command line cannot put it
    added.back()->group("");    // hidden: it only explains why not
  }
  function(
      "secret-file",
      [&config](const std::string& v) {
        try {
          config.secret = read_secret_file(v, "--secret-file");
        } catch (const Error& e) {
          throw CLI::ValidationError(e.what());
        }
      },
      "shared secret (first line, file mode 600), proved at every connection (or the secret itself in "
      "RDMAPS_SECRET)",
      CLI::Validator(), "FILE", "");  // none: the secret, if any, is in RDMAPS_SECRET
  function(
      "reconnect", [&config](const std::string& v) { config.reconnect_ms = *to_millis(v); },
      "worker: keep reconnecting to a restarted server this long (0: fail at once)", duration(), "SEC",
      duration_text(config.reconnect_ms));
  function(
      "peer-timeout", [&config](const std::string& v) { config.peer_timeout_ms = *to_millis(v); },
      "a peer silent this long (host gone, network cut) is dead, on every transport; shorter partitions heal "
      "(0: no probe of the control connections, UCX's keepalive on its tcp ones, about 20 s)",
      duration(), "SEC", duration_text(config.peer_timeout_ms));
  option("checkpoint-dir", config.checkpoint_dir, "server: write checkpoints there",
         CLI::Validator([](std::string& v) { return v.empty() ? std::string("'' is not a directory") : ""; }, ""));
  function(
      "checkpoint-every",
      [&config](const std::string& v) {
        if (counts_updates(v)) {
          config.checkpoint_every_updates = std::stoull(v.back() == 'u' ? v.substr(0, v.size() - 1) : v);
          config.checkpoint_every_ms = 0;
        } else {
          config.checkpoint_every_ms = *to_millis(v);
          config.checkpoint_every_updates = 0;
        }
      },
      "server: a checkpoint every T (60s, 500ms) or N applied updates (N or Nu; one per shard a push touches)",
      CLI::Validator(
          [](std::string& v) -> std::string {
            std::string n = counts_updates(v) && v.back() == 'u' ? v.substr(0, v.size() - 1) : v;
            if (counts_updates(v) ? cli::count(1)(n).empty() : to_millis(v).value_or(0) > 0) return {};
            return "'" + v + "' is not a positive count of updates (N) or a time (Ns, Nms)";
          },
          ""),
      "T|N",
      config.checkpoint_every_updates && !config.checkpoint_every_ms ? std::to_string(config.checkpoint_every_updates)
                                                                     : duration_text(config.checkpoint_every_ms));
  option("checkpoint-keep", config.checkpoint_keep, "server: newest checkpoints kept", cli::count(1, 1000));
  switch_("resume", config.resume, "server: start from the newest valid checkpoint in --checkpoint-dir");
  function(
      "server-threads", [&config](const std::string& v) { config.server_threads = v == "auto" ? 0 : std::stoul(v); },
      "server threads, each owning part of the shards (auto: one per core)",
      cli::word_or("auto", cli::count(0, 1024), "a thread count in 0..1024 or auto"), "N|auto",
      config.server_threads ? std::to_string(config.server_threads) : "auto");
  switch_("skip-pulls", config.skip_pulls, "SSP: skip the pulls the bound allows (off: pull every clock)");
  // Checkpoint settings without a directory would silently do nothing.
  if (wanted("checkpoint-dir"))
    for (const char* flag : {"--checkpoint-every", "--checkpoint-keep"})
      if (CLI::Option* o = app.get_option_no_throw(flag)) o->needs(app.get_option("--checkpoint-dir"));
  const bool secret_file = wanted("secret-file"), tau_max = wanted("tau-max") && wanted("staleness-policy");
  if (secret_file || tau_max)
    app.final_callback([&app, &config, secret_file, tau_max] {
      const char* secret = std::getenv("RDMAPS_SECRET");
      if (secret_file && secret && app.get_option("--secret-file")->count() == 0)
        config.secret = checked_secret(secret, "RDMAPS_SECRET");
      // As a checkpoint setting without a directory: taken, it did nothing.
      if (tau_max && app.get_option("--tau-max")->count() > 0 &&
          config.staleness_policy != StalenessPolicy::kDropAboveMax)
        throw Error(Errc::kInvalidArgument, "--tau-max " + std::to_string(config.tau_max) +
                                                " does nothing without --staleness-policy drop: give both, or neither");
    });
  return added;
}

std::string unused_rule_flag(const CLI::App& app, const std::vector<std::string>& args, UpdateRule rule) {
  for (const CLI::Option* o : app.get_options()) {
    const std::string& name = o->get_name();
    if (!name.starts_with("--") || !cli::on_command_line(o, args)) continue;
    const std::optional<UpdateRule> owner = ps::RuleParams::rule_of_flag(name.substr(2));
    if (!owner || *owner == rule) continue;
    const std::string value = o->results().empty() ? std::string() : " " + o->results().back();
    return name + value + " does nothing with rule " + rule_name(rule) + ": it is rule " + rule_name(*owner) +
           "'s (give that rule, or leave the flag out)";
  }
  return "";
}

void parse_config(Config& config, const std::vector<std::string>& args, std::vector<std::string>* rest) {
  CLI::App app;
  app.set_help_flag();  // a library call prints nothing; "--help" is an unknown flag, left in `rest`
  app.allow_extras();   // left in `rest`; refused without it
  cli::set_defaults(app);
  add_config_flags(app, config);
  cli::parse(app, args);
  if (rest) {
    *rest = app.remaining();
  } else if (const std::vector<std::string> left = app.remaining(); !left.empty()) {
    // A typo (--stalenes 3) was dropped without a word, and the worker ran
    // with the default, refused by its servers for a reason far from it.
    throw Error(Errc::kInvalidArgument, "unknown configuration flag '" + left.front() + "'");
  }
}
namespace {
void put_rule(std::ostream& o, const Config& c) {
  o << "rule " << rule_name(c.rule) << ", lr " << c.learning_rate;
  if (c.rule == UpdateRule::kMomentum) o << ", momentum " << c.momentum;
  if (c.rule == UpdateRule::kDcAsgdConstant) o << ", lambda " << c.dc_lambda;
  if (c.rule == UpdateRule::kDcAsgdAdaptive) {
    o << ", lambda0 " << c.dc_lambda0 << ", ms-momentum " << c.ms_momentum << ", eps " << c.eps
      << ", ms-bias-correction " << (c.ms_bias_correction ? "on" : "off") << ", dc-bound " << or_off(c.dc_bound)
      << ", dc-tau0 " << or_off(c.dc_tau0);
  }
}

// A server takes what its first worker asks for where it was told nothing
// (the staleness bound unless given one, the rule under
// --rule-from-workers): its line said the defaults it would not use.
std::string describe(const Config& c, bool workers_own, bool rule_from_workers = false) {
  std::ostringstream o;
  // A resumed checkpoint fixes both before any worker comes (its line says which).
  const char* from = c.resume ? "the resumed checkpoint, else the first worker" : "the first worker";
  if (!workers_own && !c.staleness_stated)
    o << "staleness from " << from;
  else
    o << "staleness " << (c.staleness == kInfiniteStaleness ? std::string("inf") : std::to_string(c.staleness));
  o << ", ";
  if (rule_from_workers)
    o << "rule from " << from;
  else
    put_rule(o, c);
  if (workers_own && c.staleness != kInfiniteStaleness && c.staleness != 0)
    o << ", skip-pulls " << (c.skip_pulls ? "on" : "off");
  o << ", staleness-policy "
    << (c.staleness_policy == StalenessPolicy::kNone         ? "none"
        : c.staleness_policy == StalenessPolicy::kScaleByTau ? "eta-tau"
                                                             : "drop (tau-max " + std::to_string(c.tau_max) + ")")
    << ", check-nan " << (c.check_nan ? "on" : "off") << ", push-path " << push_path_name(c.push_path)
    << ", put-landing "
    << (c.put_landing == PutLanding::kOn    ? "on"
        : c.put_landing == PutLanding::kOff ? "off"
                                            : "auto")
    << ", wire " << (c.wire == WireFormat::kBf16 ? "bf16" : "f32") << ", transport " << c.transport << ", shard "
    << c.shard_floats << " floats, inbox " << c.inbox_slots << " slots, secret " << (c.secret.empty() ? "none" : "set");
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
}  // namespace

std::string describe(const Config& c) { return describe(c, true); }
std::string describe_server(const Config& c, bool rule_from_workers) { return describe(c, false, rule_from_workers); }
std::string describe_rule(const Config& c) {
  std::ostringstream o;
  put_rule(o, c);
  return o.str();
}

const char* config_help() {
  static const std::string help = [] {
    CLI::App app;
    app.set_help_flag();
    cli::set_defaults(app);
    Config defaults;
    add_config_flags(app, defaults);
    // The options section alone, for programs that print it under their own.
    std::string text = app.help();
    return text.substr(std::min(text.size(), text.find('\n', text.find(kConfigGroup)) + 1));
  }();
  return help.c_str();
}

std::string config_error(const Config& c) {
  auto outside = [](const char* field, uint64_t value, uint64_t low, uint64_t high) -> std::string {
    if (value >= low && value <= high) return "";
    return std::string("Config::") + field + " is " + std::to_string(value) + ", outside " + std::to_string(low) +
           ".." + std::to_string(high) + " (what its flag takes)";
  };
  // An enum from an int (a binding, a cast) may name no value: the server
  // silently applied nothing for rule 7.
  auto named = [](const char* field, int value, int count) -> std::string {
    if (value >= 0 && value < count) return "";
    return std::string("Config::") + field + " is " + std::to_string(value) + ", which names no value (0.." +
           std::to_string(count - 1) + ")";
  };
  // Durations past 1e12 ms (31 years) wrapped to negative ones downstream.
  constexpr uint64_t kLongest = 1'000'000'000'000ull;
  for (std::string why :
       {named("rule", static_cast<int>(c.rule), 4), named("staleness_policy", static_cast<int>(c.staleness_policy), 3),
        named("push_path", static_cast<int>(c.push_path), 3), named("put_landing", static_cast<int>(c.put_landing), 3),
        named("wire", static_cast<int>(c.wire), 2), named("gpu_path", static_cast<int>(c.gpu_path), 2),
        outside("shard_floats", c.shard_floats, 1, 1u << 28), outside("inbox_slots", c.inbox_slots, 1, 1024),
        outside("staging_depth", c.staging_depth, 0, 64), outside("server_threads", c.server_threads, 0, 1024),
        outside("checkpoint_keep", c.checkpoint_keep, 1, 1000), outside("reconnect_ms", c.reconnect_ms, 0, kLongest),
        outside("peer_timeout_ms", c.peer_timeout_ms, 0, kLongest),
        outside("checkpoint_every_ms", c.checkpoint_every_ms, 0, kLongest)})
    if (!why.empty()) return why;
  // As --transport takes it: a Client took "bogus" and failed only at connect().
  if (c.transport != "tcp" && c.transport != "shm" && c.transport != "auto")
    return "Config::transport is '" + c.transport + "', not tcp, shm or auto";
  if (!c.secret.empty() && c.secret.size() < kMinSecret)
    return "Config::secret has " + std::to_string(c.secret.size()) + " bytes, too easy to guess; give at least " +
           std::to_string(kMinSecret);
  // The rule's floats too (lr, momentum, eps, lambda, ...): Server and Client refused them while this
  // said the Config was fine, to a trainer that checked first.
  return ps::RuleParams::from(c).out_of_range();
}

}  // namespace rdmaps
