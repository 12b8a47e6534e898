#include "src/train/options.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "rdmaps/error.h"
#include "rdmaps/server.h"
#include "src/train/virtual_workers.h"

namespace rdmaps::train {
namespace {

constexpr uint32_t kMaxLocalProcesses = 256;

uint64_t to_u64(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  if (v.empty() || v[0] == '-') bad_flag(flag, "'" + v + "' is not a non-negative integer");
  errno = 0;
  uint64_t n = std::strtoull(v.c_str(), &end, 10);
  if (*end || errno == ERANGE) bad_flag(flag, "'" + v + "' is not a non-negative integer below 2^64");
  return n;
}

// A count that must fit its field: 4294967297 is an error, not 1.
uint32_t to_u32(const std::string& flag, const std::string& v, uint64_t max = UINT32_MAX) {
  const uint64_t n = to_u64(flag, v);
  if (n > max) bad_flag(flag, v + " is more than " + std::to_string(max));
  return static_cast<uint32_t>(n);
}

double to_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || !std::isfinite(d)) bad_flag(flag, "'" + v + "' is not a number");
  return d;
}

void usage() {
  std::printf(
      "usage: rdmaps-train [flags]\n"
      "  Trains a 784-256-128-10 MLP on Fashion-MNIST through rdmaps. With no role: one\n"
      "  server and --workers workers as local processes, a live progress line, then a\n"
      "  summary, OUT/metrics.csv, OUT/accuracy.png and OUT/summary.json.\n\n"
      "  --workers N --servers N   (4, 1)\n"
      "  --virtual-workers N       N workers in one process, stepping in a seeded schedule\n"
      "                            (staleness as with N in parallel, runs repeat bit for bit)\n"
      "  --delay round-robin|geometric:MEAN|uniform:MAX\n"
      "                            the schedule: each step takes N ticks plus this delay, a tick\n"
      "                            being one update slot; round-robin: every push N-1 stale\n"
      "  --transport shm|tcp       (shm)\n"
      "  --sync | --async | --staleness S   consistency: BSP, fully async (default), SSP\n"
      "  --dc off|constant|adaptive         delay compensation: SGD, DC-ASGD-c, DC-ASGD-a (adaptive)\n"
      "  --lr X --lambda X --lambda0 X      (0.1, 0.04, 32)\n"
      "  --schedule constant|cosine         learning rate over the run; cosine decays lr to 5 %% (constant)\n"
      "  --epochs E --batch B      (15, 64)\n"
      "  --straggler K:FACTOR      worker K sleeps so that it runs FACTOR times slower\n"
      "  --straggler random:FACTOR each step, each worker is that slow with chance 1/workers\n"
      "  --data DIR                IDX files (%s)\n"
      "  --out DIR                 where metrics.csv, accuracy.png, summary.json go (rdmaps-train-out)\n"
      "  --json                    print the summary as one JSON object\n"
      "  --compare                 sequential SGD, BSP, SSP(3), ASGD, DC-ASGD-c, DC-ASGD-a: one table, one plot\n"
      "                            (with --virtual-workers: the asynchronous ones)\n"
      "  --seed N --train-limit N --test-limit N\n"
      "  --expect-accuracy X       exit with status 3 if the final test accuracy is below X\n"
      "  --gpu-shard               servers keep parameters, state and backups on the GPU (fused kernel)\n"
      "  --metrics HOST:PORT       Prometheus metrics at http://HOST:PORT/metrics; a local run gives\n"
      "                            server i PORT+i and worker j PORT+servers+j (docs/observability.md)\n"
      "  any parameter-server flag below reaches every process of the job:\n%s"
      "  launched: under mpirun, srun or torchrun each rank takes its role from the launcher:\n"
      "           ranks below --servers serve, the others train (--launch-timeout SEC, 120)\n"
      "  cluster: --role server --listen HOST:PORT --index I --servers S --workers W [...]\n"
      "           --role worker --worker I --servers-list H:P,H:P --workers W [...]\n"
      "           --role driver: the local run even where launcher variables are set\n",
      kDefaultDataDir, config_help());
}

}  // namespace

[[noreturn]] void bad_flag(const std::string& flag, const std::string& why) {
  throw Error(Errc::kInvalidArgument, flag + ": " + why + " (see --help)");
}

Options parse_options(int argc, char** argv) {
  Options o;
  bool delay_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) bad_flag(flag, "needs a value");
      return argv[++i];
    };
    if (flag == "--help" || flag == "-h") {
      usage();
      std::exit(0);
    } else if (flag == "--role") {
      o.role = value();
      o.role_given = true;
    } else if (flag == "--workers") {
      o.workers = to_u32(flag, value());
      o.workers_given = true;
    } else if (flag == "--virtual-workers") {
      uint64_t n = to_u64(flag, value());
      if (n == 0) bad_flag(flag, "needs at least 1 worker");
      if (n > kMaxWorkers)
        bad_flag(flag,
                 std::to_string(n) + " is more than the " + std::to_string(kMaxWorkers) + " workers a server accepts");
      o.virtual_workers = static_cast<uint32_t>(n);
    } else if (flag == "--delay") {
      o.delay = value();
      DelaySpec::parse(flag, o.delay);
      delay_given = true;
    } else if (flag == "--servers") {
      o.servers = to_u32(flag, value(), kMaxWorkers);
      o.servers_given = true;
    } else if (flag == "--launch-timeout") {
      o.launch_timeout_s = to_double(flag, value());
      if (!(o.launch_timeout_s > 0)) bad_flag(flag, "must be more than 0 seconds");
    } else if (flag == "--epochs")
      o.epochs = to_u32(flag, value());
    else if (flag == "--batch")
      o.batch = to_u32(flag, value());
    else if (flag == "--transport")
      o.transport = value();
    else if (flag == "--data")
      o.data = value();
    else if (flag == "--out")
      o.out = value();
    else if (flag == "--sync")
      o.staleness = "0";
    else if (flag == "--async")
      o.staleness = "inf";
    else if (flag == "--staleness") {
      std::string v = value();
      o.staleness = v == "inf" ? v : std::to_string(to_u64(flag, v));
    } else if (flag == "--dc")
      o.dc = value();
    else if (flag == "--lr") {
      o.lr = static_cast<float>(to_double(flag, value()));
      if (!(o.lr > 0)) bad_flag(flag, "the learning rate must be positive");
    } else if (flag == "--schedule")
      o.schedule = value();
    else if (flag == "--lambda" || flag == "--lambda0") {
      const float v = static_cast<float>(to_double(flag, value()));
      if (v < 0) bad_flag(flag, "must be at least 0");
      (flag == "--lambda" ? o.lambda : o.lambda0) = v;
    } else if (flag == "--seed")
      o.seed = to_u64(flag, value());
    else if (flag == "--json")
      o.json = true;
    else if (flag == "--gpu-shard")
      o.gpu_shard = true;
    else if (flag == "--compare")
      o.compare = true;
    else if (flag == "--expect-accuracy")
      o.expect_accuracy = to_double(flag, value());
    else if (flag == "--train-limit")
      o.train_limit = to_u64(flag, value());
    else if (flag == "--test-limit")
      o.test_limit = to_u64(flag, value());
    else if (flag == "--listen")
      o.listen = value();
    else if (flag == "--index")
      o.index = to_u32(flag, value());
    else if (flag == "--worker")
      o.worker = to_u32(flag, value());
    else if (flag == "--servers-list")
      o.servers_list = value();
    else if (flag == "--report-fd")
      o.report_fd = static_cast<int>(to_u64(flag, value()));
    else if (flag == "--label")
      o.label = value();
    else if (flag == "--metrics")
      o.metrics = value();
    else if (flag == "--straggler") {
      std::string v = value();
      auto colon = v.find(':');
      if (colon == std::string::npos) bad_flag(flag, "'" + v + "' is not K:FACTOR or random:FACTOR (e.g. 0:4)");
      o.straggler_random = v.substr(0, colon) == "random";
      o.straggler = o.straggler_random ? -1 : static_cast<int>(to_u64(flag, v.substr(0, colon)));
      o.straggle_factor = to_double(flag, v.substr(colon + 1));
      if (o.straggle_factor < 1.0) bad_flag(flag, "FACTOR must be at least 1");
    } else if (flag.rfind("--", 0) == 0) {
      // A parameter-server flag, checked by parse_config below: its value is
      // the next argument unless it is a switch standing alone.
      o.config_args.push_back(flag);
      if (flag.find('=') == std::string::npos && i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0)
        o.config_args.push_back(argv[++i]);
    } else {
      bad_flag(flag, "unexpected argument");
    }
  }
  std::vector<std::string> unknown;
  Config scratch;
  parse_config(scratch, o.config_args, &unknown);
  if (!unknown.empty()) bad_flag(unknown.front(), "unknown flag");
  if (o.transport != "shm" && o.transport != "tcp" && o.transport != "auto")
    bad_flag("--transport", "'" + o.transport + "' is not shm, tcp or auto");
  if (o.schedule != "constant" && o.schedule != "cosine")
    bad_flag("--schedule", "'" + o.schedule + "' is not constant or cosine");
  if (o.dc != "off" && o.dc != "constant" && o.dc != "adaptive")
    bad_flag("--dc", "'" + o.dc + "' is not off, constant or adaptive");
  if (o.virtual_workers) {
    if (o.workers_given && o.workers != o.virtual_workers)
      bad_flag("--workers", std::to_string(o.workers) + " differs from --virtual-workers " +
                                std::to_string(o.virtual_workers) + " (give one of them)");
    o.workers = o.virtual_workers;
    if (o.staleness != "inf")
      bad_flag("--virtual-workers",
               "the schedule sets the staleness: it runs fully asynchronous, not with --sync "
               "or --staleness");
    if (o.straggler >= 0 || o.straggler_random)
      bad_flag("--straggler", "virtual workers are delayed by --delay, not by sleeping");
  } else if (delay_given) {
    bad_flag("--delay", "sets the schedule of --virtual-workers, which is not given");
  }
  if (o.workers == 0 || o.servers == 0 || o.epochs == 0 || o.batch == 0)
    bad_flag("--workers/--servers/--epochs/--batch", "must be at least 1");
  if (o.workers > kMaxWorkers)
    bad_flag("--workers", std::to_string(o.workers) + " is more than the " + std::to_string(kMaxWorkers) +
                              " workers a server accepts");
  if (o.straggler >= static_cast<int>(o.workers))
    bad_flag("--straggler", "worker " + std::to_string(o.straggler) + " does not exist");
  if (o.role == "worker" && o.worker >= o.workers)
    bad_flag("--worker", "worker " + std::to_string(o.worker) + " is not below --workers " + std::to_string(o.workers));
  if (o.role == "server" && o.index >= o.servers)
    bad_flag("--index", "server " + std::to_string(o.index) + " is not below --servers " + std::to_string(o.servers));
  if (o.role.empty() && !o.virtual_workers && o.workers + o.servers > kMaxLocalProcesses)
    bad_flag("--workers", "a local run starts a process per worker and server; " +
                              std::to_string(o.workers + o.servers) + " is more than " +
                              std::to_string(kMaxLocalProcesses) + " (use --virtual-workers, or run on a cluster)");
  if (!o.metrics.empty() && o.role == "driver" && !o.role_given) {
    // The local run's processes share the host: each needs its own port, known in advance.
    const auto colon = o.metrics.rfind(':');
    if (colon == std::string::npos) bad_flag("--metrics", "'" + o.metrics + "' is not HOST:PORT");
    const uint64_t port = to_u64("--metrics", o.metrics.substr(colon + 1));
    const uint64_t processes = o.servers + (o.virtual_workers ? 0 : o.workers);
    if (port == 0 || port + processes - 1 > 65535)
      bad_flag("--metrics", "a local run serves metrics on ports PORT to PORT+" + std::to_string(processes - 1) +
                                " (one per server and worker process): give a port from 1 to " +
                                std::to_string(65536 - processes));
  }
  return o;
}

std::string metrics_address_for(const Options& o, uint32_t offset) {
  const auto colon = o.metrics.rfind(':');
  return o.metrics.substr(0, colon + 1) + std::to_string(std::stoul(o.metrics.substr(colon + 1)) + offset);
}

Config config_of(const Options& o) {
  Config c;
  std::vector<std::string> args = {
      "--transport", o.transport,
      "--staleness", o.staleness,
      "--lr",        std::to_string(o.lr),
      "--lambda",    std::to_string(o.lambda),
      "--lambda0",   std::to_string(o.lambda0),
      "--rule",      o.dc == "off" ? "sgd" : o.dc == "constant" ? "dc-asgd-c" : "dc-asgd-a"};
  args.insert(args.end(), o.config_args.begin(), o.config_args.end());
  parse_config(c, args, nullptr);
  return c;
}

std::vector<std::string> passthrough(const Options& o) {
  std::vector<std::string> args = {"--workers",     std::to_string(o.workers),
                                   "--servers",     std::to_string(o.servers),
                                   "--epochs",      std::to_string(o.epochs),
                                   "--batch",       std::to_string(o.batch),
                                   "--transport",   o.transport,
                                   "--data",        o.data,
                                   "--staleness",   o.staleness,
                                   "--dc",          o.dc,
                                   "--lr",          std::to_string(o.lr),
                                   "--schedule",    o.schedule,
                                   "--lambda",      std::to_string(o.lambda),
                                   "--lambda0",     std::to_string(o.lambda0),
                                   "--seed",        std::to_string(o.seed),
                                   "--train-limit", std::to_string(o.train_limit),
                                   "--test-limit",  std::to_string(o.test_limit)};
  if (o.gpu_shard) args.push_back("--gpu-shard");
  args.insert(args.end(), o.config_args.begin(), o.config_args.end());
  return args;
}

std::string default_label(const Options& o) {
  std::string mode = o.staleness == "0" ? "BSP" : o.staleness == "inf" ? "async" : "SSP s=" + o.staleness;
  std::string dc = o.dc == "off" ? "" : o.dc == "constant" ? " DC-c" : " DC-a";
  return (o.virtual_workers ? "virtual " + std::to_string(o.virtual_workers) + " " : "") + mode + dc;
}

}  // namespace rdmaps::train
