#include "src/train/options.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "rdmaps/error.h"
#include "rdmaps/server.h"
#include "src/api/cli.h"
#include "src/api/config_flags.h"
#include "src/api/utf8.h"
#include "src/launch/placement.h"
#include "src/launch/server_list.h"
#include "src/tools/program_start.h"
#include "src/train/virtual_workers.h"
#include "transport/address.h"

namespace rdmaps::train {
namespace {

constexpr uint32_t kMaxLocalProcesses = 256;

// Workers a server accepts: more is refused saying so, not as a bare range.
CLI::Validator worker_count(uint64_t min) {
  return CLI::Validator(
      [min](std::string& v) -> std::string {
        const cli::Decimal d = cli::parse_decimal(v);
        if (d.too_large || (d.digits && d.value > kMaxWorkers))
          return v + " is more than the " + std::to_string(kMaxWorkers) + " workers a server accepts";
        return cli::count(min)(v);  // in decimal: a transform, or CLI11 reads 010 as octal 8
      },
      "");
}

// K:FACTOR or random:FACTOR, FACTOR from 1 to kMaxStraggle: a step slowed
// far more would sleep past what a duration holds (1e12 hung the run, 1e300
// slowed nothing).
constexpr double kMaxStraggle = 1000;
CLI::Validator straggler_spec() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        const auto colon = v.find(':');
        if (colon == std::string::npos) return "'" + v + "' is not K:FACTOR or random:FACTOR (e.g. 0:4)";
        std::string who = v.substr(0, colon), factor = v.substr(colon + 1);
        if (who != "random" && !cli::count(0, kMaxWorkers - 1)(who).empty())
          return "'" + v + "': '" + who + "' is neither a worker number nor random";
        double f = 0;
        if (!cli::parse_real(factor, f) || !std::isfinite(f)) return "'" + v + "': FACTOR is not a number";
        if (f < 1.0 || f > kMaxStraggle) return "'" + v + "': FACTOR must be from 1 to 1000";
        return {};
      },
      "");
}

// The consistency flags set one thing; two of them that disagree are refused
// after parsing (the last one counted: --sync --staleness 3 ran SSP(3)).
void add_consistency(CLI::App& app, Options& o, const std::string& group) {
  auto set = [&o](const std::string& flag, const std::string& as_given, const std::string& bound) {
    o.staleness = bound;
    auto& given = o.consistency_given;
    auto same = std::find_if(given.begin(), given.end(), [&](const Options::ModeGiven& g) { return g.flag == flag; });
    if (same != given.end())
      *same = {flag, as_given, bound};
    else
      given.push_back({flag, as_given, bound});
  };
  app.add_flag_callback(
         "--sync", [set] { set("--sync", "--sync", "0"); },
         "bulk synchronous (BSP): staleness 0; every worker's gradient is applied at --lr, so a round moves "
         "N x lr along their mean (8 workers at lr 0.1 do not learn: lower --lr as workers grow)")
      ->trigger_on_parse()
      ->group(group);
  app.add_flag_callback(
         "--async", [set] { set("--async", "--async", "inf"); }, "fully asynchronous (the default)")
      ->trigger_on_parse()
      ->group(group);
  app.add_option_function<std::string>(
         "--staleness",
         [set](const std::string& v) {
           // 2^64-1 is the servers' own "no bound": labelled SSP, it ran async.
           const bool none = v == "inf" || v == "async" || std::stoull(v) == UINT64_MAX;
           set("--staleness", "--staleness " + v, none ? "inf" : std::to_string(std::stoull(v)));
         },
         "stale synchronous (SSP): a worker runs at most S clocks ahead of the slowest (inf or async: none)")
      // As rdmaps-server reads it (src/api/config.cc): one flag, one reading.
      ->check(cli::word_or("async", cli::word_or("inf", cli::count(0), "a whole number, inf or async"),
                           "a whole number, inf or async"))
      ->type_name("S|inf")
      ->default_str(o.staleness)
      ->trigger_on_parse()
      ->group(group);
}

// The update rule --dc names.
const char* rule_of_dc(const std::string& dc) {
  return dc == "off" ? "sgd" : dc == "constant" ? "dc-asgd-c" : "dc-asgd-a";
}
// The --dc a rule agrees with: off for a rule without delay compensation.
const char* dc_of_rule(const std::string& rule) {
  return rule == "dc-asgd-c" ? "constant" : rule == "dc-asgd-a" ? "adaptive" : "off";
}

// "%.9g": a float's exact value, where std::to_string would turn 1e-7 into 0.000000.
std::string exact(float v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(v));
  return buf;
}

}  // namespace

[[noreturn]] void bad_flag(const std::string& flag, const std::string& why) {
  throw cli::UsageError(Errc::kInvalidArgument, flag + ": " + why + " (see --help)");
}

void check_straggler(const Options& o) {
  if (o.straggler.worker >= static_cast<int>(o.workers))
    bad_flag("--straggler", "worker " + std::to_string(o.straggler.worker) + " does not exist (the job has " +
                                std::to_string(o.workers) + " workers)");
}

Options parse_options(int argc, char** argv) {
  Options o;
  CLI::App app(
      "Trains a 784-256-128-10 MLP on Fashion-MNIST through rdmaps. With no role: --servers servers and\n"
      "--workers workers as local processes, a live progress line, then a summary, OUT/metrics.csv,\n"
      "OUT/accuracy.png and OUT/summary.json.",
      "rdmaps-train");
  app.footer(
      "Every parameter-server flag reaches every process of the job.\n"
      "Launched: under mpirun, srun or torchrun each rank takes its role from the launcher: ranks\n"
      "below --servers serve, the others train (--launch-timeout bounds the address exchange).\n"
      "Cluster: --role server --listen HOST:PORT --index I --servers S --workers W [...]\n"
      "         --role worker --worker I --servers-list H:P,H:P --workers W [...]\n"
      "         --role driver: the local run even where launcher variables are set");
  cli::set_defaults(app);
  const std::string job = "Training", roles = "Cluster roles (docs/cluster.md)";
  auto* workers = app.add_option("--workers", o.workers, "worker processes")->transform(worker_count(1));
  auto* servers = app.add_option("--servers", o.servers, "server processes")->transform(cli::count(1, kMaxServers));
  app.add_option("--virtual-workers", o.virtual_workers,
                 "N workers in one process, stepping in a seeded schedule (staleness as with N in parallel, runs "
                 "repeat bit for bit); the schedule also plays --straggler and the --staleness/--sync bound")
      ->transform(CLI::Validator(
          [](std::string& v) -> std::string {
            if (std::string why = worker_count(0)(v); !why.empty()) return why;
            return cli::parse_decimal(v).value == 0 ? "needs at least 1 worker" : "";
          },
          ""));
  auto* delay = app.add_option("--delay", o.delay,
                               "the virtual schedule: each step takes N ticks plus this delay, a tick being one update "
                               "slot; round-robin: every push N-1 stale")
                    ->type_name("round-robin|geometric:MEAN|uniform:MAX");
  app.add_option("--transport", o.transport, "UCX transports (auto: UCX_TLS)")
      ->check(cli::one_of({"shm", "tcp", "auto"}))
      ->type_name("shm|tcp|auto");
  // The options added so far without a group go into `group`, with their defaults
  // shown; a switch's default_str is its value when it stands alone, so it keeps it.
  auto place = [&app](const std::string& group) {
    for (CLI::Option* opt : app.get_options())
      if (opt->get_group() == "Options" && opt->get_name() != "--help") {
        opt->group(group);
        if (opt->get_expected_min() != 0) opt->capture_default_str();
      }
  };
  place(job);
  add_consistency(app, o, job);
  auto* dc = app.add_option("--dc", o.dc, "delay compensation: off (SGD), constant (DC-ASGD-c), adaptive (DC-ASGD-a)")
                 ->check(cli::one_of({"off", "constant", "adaptive"}))
                 ->type_name("off|constant|adaptive");
  app.add_option("--lr", o.lr, "learning rate")->check(cli::positive());
  app.add_option("--lambda", o.lambda, "DC-ASGD-c lambda")->check(cli::non_negative());
  app.add_option("--lambda0", o.lambda0, "DC-ASGD-a lambda0")->check(cli::non_negative());
  app.add_option("--schedule", o.schedule, "learning rate over the run; cosine decays lr to 5 %")
      ->check(cli::one_of({"constant", "cosine"}))
      ->type_name("constant|cosine");
  app.add_option("--epochs", o.epochs, "passes over the training set")->transform(cli::count(1, UINT32_MAX));
  app.add_option("--batch", o.batch, "examples per step")->transform(cli::count(1, UINT32_MAX));
  app.add_option_function<std::string>(
         "--straggler",
         [&o](const std::string& v) {
           const auto colon = v.find(':');
           o.straggler.random = v.substr(0, colon) == "random";
           o.straggler.worker = o.straggler.random ? -1 : std::stoi(v.substr(0, colon));
           o.straggler.factor = std::stod(v.substr(colon + 1));
         },
         "worker K sleeps so that it runs FACTOR times slower; random: each step, each worker is that slow with "
         "chance 1/workers (virtual workers: the step takes FACTOR times N ticks, to the nearest tick, "
         "plus its --delay)")
      ->check(straggler_spec())
      ->type_name("K:FACTOR|random:FACTOR");
  app.add_option("--data", o.data, "IDX files")->type_name("DIR");
  app.add_option("--out", o.out, "where metrics.csv, accuracy.png and summary.json go")->type_name("DIR");
  cli::add_switch(app, "--json", o.json, "print the summary as one JSON object");
  cli::add_switch(app, "--compare", o.compare,
                  "sequential SGD, BSP, SSP(3), ASGD, DC-ASGD-c, DC-ASGD-a: one table, one plot (with "
                  "--virtual-workers: time to 85 % on the schedule's clock, in step times)");
  app.add_option(
         "--seed", o.seed,
         "seed of the data order, the initial weights, the --virtual-workers schedule and the --straggler draws")
      ->transform(cli::count(0));
  app.add_option("--train-limit", o.train_limit, "train on the first N examples (0: all)")->transform(cli::count(0));
  app.add_option("--test-limit", o.test_limit, "test on the first N examples (0: all)")->transform(cli::count(0));
  app.add_option("--evals-per-epoch", o.evals_per_epoch,
                 "test passes per epoch, by worker 0 beside its steps (more: a finer time to 85 %)")
      ->transform(cli::count(1, 1000));
  app.add_option("--expect-accuracy", o.expect_accuracy,
                 "exit with status 3 if the final test accuracy is below X (off: no check)")
      ->transform(CLI::Validator(
          [](std::string& v) {
            // -1 stands for off inside; typed, it is no fraction (it was taken as off).
            if (!v.empty() && v[0] == '-') return "'" + v + "' is not a fraction from 0 to 1 (88 % is 0.88), or off";
            if (v == "off") v = "-1";  // what the help shows as its default
            return std::string();
          },
          ""))
      ->check(cli::number([](double d) { return d == -1 || (d >= 0 && d <= 1); },
                          "a fraction from 0 to 1 (88 % is 0.88), or off"))
      ->type_name("X")
      ->option_text("X|off=off");  // not "=-1", the value that stands for off
  cli::add_switch(app, "--gpu-shard", o.gpu_shard,
                  "servers keep parameters, state and backups on the GPU (fused kernel)");
  app.add_option("--metrics", o.metrics,
                 "Prometheus metrics at http://HOST:PORT/metrics; a local run gives server i PORT+i and worker j "
                 "PORT+servers+j (docs/observability.md)")
      ->type_name("HOST:PORT")
      ->check(cli::address());
  app.add_option("--label", o.label, "the run's name in the summary (default: from the mode)")
      ->check(
          [](const std::string& v) {
            const size_t at = utf8_error_at(v);
            return at == std::string::npos
                       ? std::string()
                       : "the label is not UTF-8 at byte " + std::to_string(at) + " (the summary is JSON)";
          },
          "UTF-8 text");
  app.add_option("--launch-timeout", o.launch_timeout_s, "under a launcher: bound on the address exchange (SEC)")
      ->check(cli::seconds());
  place(job);
  auto* role = app.add_option("--role", o.role, "run one process of a cluster job")
                   ->check(cli::one_of({"driver", "server", "worker", "virtual"}))
                   ->type_name("driver|server|worker|virtual");
  auto* listen = app.add_option("--listen", o.listen, "server: address to serve on")
                     ->type_name("HOST:PORT")
                     ->check(cli::address());
  auto* insecure =
      cli::add_switch(app, "--insecure", o.insecure, "server: serve on a non-loopback address without a shared secret");
  auto* index =
      app.add_option("--index", o.index, "server: its rank among --servers")->transform(cli::count(0, UINT32_MAX));
  auto* worker =
      app.add_option("--worker", o.worker, "worker: its rank among --workers")->transform(cli::count(0, UINT32_MAX));
  auto* servers_list =
      app.add_option("--servers-list", o.servers_list, "worker: the servers' addresses")->type_name("H:P,H:P");
  app.add_option("--report-fd", o.report_fd, "a local run's child: report there")
      ->transform(cli::count(0, INT32_MAX))
      ->group("");
  place(roles);
  // Staleness, learning rate, lambdas and transport are rdmaps-train's own
  // flags above, with their own defaults; the rule comes from --dc unless
  // --rule is given.
  Config scratch;
  const auto config_options =
      add_config_flags(app, scratch, {.only = {}, .except = {"transport", "staleness", "lr", "lambda", "lambda0"}});
  // --dc decides, as it always did, whatever the environment says.
  app.get_option("--rule")
      ->envname("")
      ->description("update rule (default: the one --dc names)")
      ->default_str(rule_of_dc(o.dc));

  const std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  // A value for a mode's flag was taken and did nothing (CLI11 runs the flag's
  // callback only when it is on): --staleness 3 --sync=off stayed SSP.
  for (const std::string& a : args)
    for (const char* mode : {"--sync=", "--async="})
      if (a.starts_with(mode))
        bad_flag(std::string(mode, std::strlen(mode) - 1),
                 "takes no value ('" + a + "'): give --sync, --async or --staleness S");
  try {
    cli::parse(app, args);
  } catch (const CLI::Success& e) {
    // --help, --version: a page that never reached standard output is no success.
    std::exit(tools::program_end("rdmaps-train", app.exit(e)));
  } catch (const Error& e) {  // a check the parse runs (--tau-max without drop): RDMAPS_TAU_MAX was named --tau-max
    throw cli::UsageError(e.code(), cli::name_source(app, args, e.what()));
  }
  // The checks after parsing name the flag; where its value came from the variable, they name that.
  try {
    // Its own flags have no variable (docs/cluster.md "Flags and variables"):
    // one set for rdmaps-server (mpirun -x RDMAPS_STALENESS=3) ran the job
    // another way without a word. A local run's children are given the flags.
    if (o.report_fd < 0)
      for (const auto& [variable, flag] : {std::pair{"RDMAPS_LR", "--lr"},
                                           {"RDMAPS_LAMBDA", "--lambda"},
                                           {"RDMAPS_LAMBDA0", "--lambda0"},
                                           {"RDMAPS_STALENESS", "--staleness"},
                                           {"RDMAPS_TRANSPORT", "--transport"},
                                           {"RDMAPS_RULE", "--rule"},
                                           // rdmaps-server's own flags' variables (a launched job
                                           // reads RDMAPS_NUM_SERVERS where --servers is not given)
                                           {"RDMAPS_WORKERS", "--workers"},
                                           {"RDMAPS_SERVER_INDEX", "--index"},
                                           {"RDMAPS_LISTEN", "--listen"},
                                           {"RDMAPS_METRICS", "--metrics"}})
        if (const char* value = std::getenv(variable))
          std::fprintf(stderr,
                       "rdmaps-train: warning: %s=%s is not read: rdmaps-train takes %s on its command line only\n",
                       variable, value, flag);
    // Read by a launched job alone: elsewhere it changed nothing, and a
    // refusal then named a --servers nobody gave.
    if (const char* n = std::getenv("RDMAPS_NUM_SERVERS");
        n && o.report_fd < 0 && (role->count() > 0 || !launch::started_with_others(launch::process_environment())))
      std::fprintf(stderr,
                   "rdmaps-train: warning: RDMAPS_NUM_SERVERS=%s is not read outside a launched job (mpirun, srun, "
                   "torchrun): rdmaps-train takes --servers on its command line\n",
                   n);
    o.role_given = role->count() > 0;
    o.workers_given = workers->count() > 0;
    o.servers_given = servers->count() > 0;
    o.transport_given = app.get_option("--transport")->count() > 0;
    o.evals_per_epoch_given = app.get_option("--evals-per-epoch")->count() > 0;
    o.launch_timeout_given = app.get_option("--launch-timeout")->count() > 0;
    o.config_args = cli::given(config_options);
    for (const char* flag : {"--out", "--label"})
      if (app.get_option(flag)->count() > 0) o.summary_flags.push_back(flag);
    if (o.json) o.summary_flags.push_back("--json");  // "--json off" asks for nothing
    if (o.compare) o.summary_flags.push_back("--compare");

    // A role's own flags elsewhere would be ignored without a word: a local run
    // and a launched job choose addresses and ranks themselves.
    const std::string explicit_role = o.role_given ? o.role : "";
    for (auto [flag, its_role] :
         {std::pair{listen, "server"}, {insecure, "server"}, {index, "server"}, {worker, "worker"}})
      if (flag->count() > 0 && explicit_role != its_role)
        bad_flag(flag->get_name(), std::string("only --role ") + its_role +
                                       " reads it (a local run and a launched job choose it themselves)");
    if (servers_list->count() > 0 && explicit_role != "worker" && explicit_role != "virtual")
      bad_flag("--servers-list",
               "only --role worker or virtual reads it (a local run and a launched job choose it themselves)");
    if (servers_list->count() > 0) {
      // Each entry now, named: the worker found a bad one only when it dialled it, after the others.
      std::vector<std::string> listed;
      try {
        listed = launch::server_list(o.servers_list, "--servers-list");
      } catch (const Error& e) {
        throw Error(e.code(), std::string(e.what()) + " (see --help)");
      }
      // Resolved now, as --listen is: a name that does not resolve failed after the data loaded, naming no flag.
      for (size_t i = 0; i < listed.size(); ++i) try {
          transport::SockAddr::parse(listed[i]);
        } catch (const Error& e) {
          bad_flag("--servers-list", "entry " + std::to_string(i + 1) + ": " + e.what());
        }
      if (o.servers_given && listed.size() != o.servers)
        bad_flag("--servers-list",
                 "names " + std::to_string(listed.size()) + " servers, --servers says " + std::to_string(o.servers));
    }
    for (const Options::ModeGiven& g : o.consistency_given)
      if (g.bound != o.consistency_given.front().bound)
        bad_flag(g.flag, "'" + g.as_given + "' disagrees with '" + o.consistency_given.front().as_given +
                             "': give one of --sync, --async and --staleness S");
    // --compare runs its own six variants, each with its own name, bound and rule.
    if (o.compare)
      for (const char* flag : {"--label", "--dc", "--sync", "--async", "--staleness"})
        if (app.get_option(flag)->count() > 0)
          bad_flag(flag,
                   "--compare runs its own variants (sequential SGD, BSP, SSP s=3, ASGD, DC-ASGD-c, DC-ASGD-a) and "
                   "sets this itself: drop it");
    // Its variants in one directory: the second resumed the first's final model, the third was refused.
    if (o.compare && app.get_option("--checkpoint-dir")->count() > 0)
      bad_flag("--checkpoint-dir",
               "--compare runs six variants one after another, and each would resume the one before's checkpoints: "
               "checkpoint a variant run on its own (--dc, --sync/--async/--staleness)");
    // A run is labelled by its rule: one that disagrees with --dc, or that
    // --compare would put under its own variants' names, is refused.
    if (app.get_option("--rule")->count() > 0) {
      const std::string rule = rule_name(config_of(o).rule);
      if (o.compare)
        bad_flag("--rule",
                 "--compare runs its own rules (sgd for sequential SGD, BSP, SSP and ASGD, then dc-asgd-c "
                 "and dc-asgd-a): drop --rule " +
                     rule);
      if (dc->count() > 0 && o.dc != dc_of_rule(rule))
        bad_flag("--rule",
                 rule + " disagrees with --dc " + o.dc + " (rule " + rule_of_dc(o.dc) + "): give one of them");
      o.dc = dc_of_rule(rule);  // what a local run's processes are told
    }
    // A rule's parameter under another rule did nothing (--lambda under the
    // default --dc adaptive). --compare runs every rule; a local run's
    // processes are given every parameter and were checked by their driver.
    if (!o.compare && o.report_fd < 0)
      if (const std::string why = unused_rule_flag(app, args, config_of(o).rule); !why.empty())
        throw Error(Errc::kInvalidArgument, why);
    if (delay->count() > 0) DelaySpec::parse("--delay", o.delay);
    if (o.virtual_workers) {
      if (o.role == "worker")
        bad_flag("--virtual-workers", "--role worker runs one worker of a job; --role virtual runs N in a schedule");
      if (o.workers_given && o.workers != o.virtual_workers)
        bad_flag("--workers", std::to_string(o.workers) + " differs from --virtual-workers " +
                                  std::to_string(o.virtual_workers) + " (give one of them)");
      o.workers = o.virtual_workers;
      // Its clients run without the bound (the schedule holds it), so they could not skip by it.
      if (config_of(o).skip_pulls) bad_flag("--skip-pulls", "is not played by the --virtual-workers schedule");
    } else if (delay->count() > 0) {
      bad_flag("--delay", "sets the schedule of --virtual-workers, which is not given");
    } else if (o.role == "virtual") {  // it loaded the data, then said "needs at least 1 worker"
      bad_flag("--role", "virtual runs the N workers --virtual-workers N names: give it");
    }
    // A setting that does nothing without another is refused (docs/cluster.md);
    // --compare's children get it for every variant, its async ones too.
    if (!o.compare && o.report_fd < 0 && o.role != "server" && config_of(o).skip_pulls && o.staleness == "inf")
      bad_flag("--skip-pulls",
               "skips pulls while a copy is within the staleness bound: fully async (--async, the "
               "default) has none; give --staleness S");
    if (o.role == "worker" && o.worker >= o.workers)
      bad_flag("--worker",
               "worker " + std::to_string(o.worker) + " is not below --workers " + std::to_string(o.workers));
    if (o.role == "server" && o.expect_accuracy >= 0)
      bad_flag("--expect-accuracy", "a server evaluates nothing; give it to the evaluating worker (--worker 0)");
    if (o.role == "worker" && o.worker != 0 && o.expect_accuracy >= 0)
      bad_flag("--expect-accuracy",
               "worker " + std::to_string(o.worker) + " evaluates nothing (it was never checked); give it to worker 0");
    if (o.role == "server" && o.index >= o.servers)
      bad_flag("--index", "server " + std::to_string(o.index) + " is not below --servers " + std::to_string(o.servers));
    // A local run starts a process per server, and per worker unless they are virtual (one process for all).
    if (const uint32_t processes = o.servers + (o.virtual_workers ? 1 : o.workers);
        o.role == "driver" && processes > kMaxLocalProcesses) {
      if (o.virtual_workers || o.servers > o.workers)
        bad_flag("--servers", "a local run starts a process per server" +
                                  std::string(o.virtual_workers ? ", and one for the virtual workers" : " and worker") +
                                  "; " + std::to_string(processes) + " is more than " +
                                  std::to_string(kMaxLocalProcesses) + " (run on a cluster)");
      bad_flag("--workers", "a local run starts a process per worker and server; " + std::to_string(processes) +
                                " is more than " + std::to_string(kMaxLocalProcesses) +
                                " (use --virtual-workers, or run on a cluster)");
    }
    if (!o.metrics.empty() && o.role == "driver" && !o.role_given) {
      // The local run's processes share the host: each needs its own port, known in advance.
      const uint32_t processes = o.servers + (o.virtual_workers ? 0 : o.workers);
      try {
        launch::port_plus(o.metrics, processes - 1, "--metrics");  // the last process's port must exist too
      } catch (const Error& e) {
        throw Error(Errc::kInvalidArgument, std::string(e.what()) +
                                                "; a local run serves metrics on ports PORT to PORT+" +
                                                std::to_string(processes - 1) + " (one per server and worker process)");
      }
    }
    // Last: a role's own flags are checked first, whatever else came with them.
    if (!o.summary_flags.empty() && o.role_given && o.role != "driver")
      bad_flag(o.summary_flags.front(), "only a local run writes a summary; --role " + o.role +
                                            " reads no such flag (the evaluating worker prints its accuracy)");
    return o;
  } catch (const Error& e) {
    throw cli::UsageError(e.code(), cli::name_source(app, args, e.what()));
  }
}

std::string metrics_address_for(const Options& o, uint32_t offset) {
  return launch::port_plus(o.metrics, offset, "--metrics");
}

Config config_of(const Options& o) {
  Config c;
  std::vector<std::string> args = {"--transport", o.transport,      "--staleness", o.staleness,
                                   "--lr",        exact(o.lr),      "--lambda",    exact(o.lambda),
                                   "--lambda0",   exact(o.lambda0), "--rule",      rule_of_dc(o.dc)};
  args.insert(args.end(), o.config_args.begin(), o.config_args.end());
  parse_config(c, args, nullptr);
  return c;
}

std::vector<std::string> passthrough(const Options& o, bool server) {
  std::vector<std::string> args = {"--workers",     std::to_string(o.workers),
                                   "--servers",     std::to_string(o.servers),
                                   "--epochs",      std::to_string(o.epochs),
                                   "--batch",       std::to_string(o.batch),
                                   "--transport",   o.transport,
                                   "--data",        o.data,
                                   "--staleness",   o.staleness,
                                   "--dc",          o.dc,
                                   "--lr",          exact(o.lr),
                                   "--schedule",    o.schedule,
                                   "--lambda",      exact(o.lambda),
                                   "--lambda0",     exact(o.lambda0),
                                   "--seed",        std::to_string(o.seed),
                                   "--train-limit", std::to_string(o.train_limit),
                                   "--test-limit",  std::to_string(o.test_limit)};
  // Only as given: the default is capped at an epoch's steps, a number asked for is checked against them.
  if (o.evals_per_epoch_given) args.insert(args.end(), {"--evals-per-epoch", std::to_string(o.evals_per_epoch)});
  // A local run's servers for virtual workers: the server role runs them without the bound.
  if (server && o.virtual_workers) args.insert(args.end(), {"--virtual-workers", std::to_string(o.virtual_workers)});
  if (o.gpu_shard) args.push_back("--gpu-shard");
  args.insert(args.end(), o.config_args.begin(), o.config_args.end());
  return args;
}

std::string default_label(const Options& o) {
  std::string mode = o.staleness == "0" ? "BSP" : o.staleness == "inf" ? "async" : "SSP s=" + o.staleness;
  const std::string rule = rule_name(config_of(o).rule);  // --dc's, or --rule's
  std::string dc = rule == "sgd" ? "" : rule == "dc-asgd-c" ? " DC-c" : rule == "dc-asgd-a" ? " DC-a" : " " + rule;
  return (o.virtual_workers ? "virtual " + std::to_string(o.virtual_workers) + " " : "") + mode + dc;
}

}  // namespace rdmaps::train
