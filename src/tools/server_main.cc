// rdmaps-server: one parameter-server process.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "rdmaps/error.h"
#include "rdmaps/server.h"
#include "src/api/capabilities.h"
#include "src/api/cli.h"
#include "src/api/config_flags.h"
#include "src/api/config_text.h"
#include "src/launch/server_directory.h"
#include "src/ps/protocol.h"
#include "src/tools/program_start.h"
#include "src/tools/server_done.h"
#include "src/tools/stop_on_signal.h"

int main(int argc, char** argv) {
  if (!rdmaps::tools::program_start("rdmaps-server")) return 1;
  CLI::App app("One parameter-server process.", "rdmaps-server");
  const std::vector<std::string> args(argv + 1, argv + argc);
  // Until the server is made, an error is the command line's (exit 2), or the launch's it reads.
  int failed = rdmaps::cli::kUsageStatus;
  try {
    rdmaps::ServerOptions options;
    double stats_s = 10, stall_s = 60, launch_timeout_s = 120;
    app.footer(
        "Under mpirun, srun or torchrun (several ranks, no --index) the rank is the index: the\n"
        "first --servers ranks run rdmaps-server, the others are the job's workers, e.g.\n"
        "  mpirun -x RDMAPS_SECRET -np 2 rdmaps-server --servers 2 --rule-from-workers : \\\n"
        "         -x RDMAPS_SECRET -x RDMAPS_NUM_SERVERS=2 -np 8 python3 train.py\n"
        "(--rule-from-workers: the servers take the update rule the workers' optimizer asks for;\n"
        "without it they keep --rule and refuse workers asking for another)");
    rdmaps::cli::set_defaults(app);
    const std::string group = "Server";
    auto* listen = app.add_option("--listen", options.listen, "address to serve on")
                       ->envname("RDMAPS_LISTEN")
                       ->check(rdmaps::cli::address())
                       ->group(group);
    auto* index = app.add_option("--index", options.index, "this server's rank among --servers")
                      ->envname("RDMAPS_SERVER_INDEX")
                      ->transform(rdmaps::cli::count(0, UINT32_MAX));
    // RDMAPS_SERVERS is the address list every other program reads (and a
    // launch may export to every rank): the count has its own name.
    auto* servers = app.add_option("--servers", options.servers, "number of servers")
                        ->envname("RDMAPS_NUM_SERVERS")
                        ->transform(rdmaps::cli::count(1, rdmaps::kMaxServers));
    auto* workers = app.add_option("--workers", options.workers, "workers the clock waits for")
                        ->envname("RDMAPS_WORKERS")
                        ->transform(rdmaps::cli::count(1, rdmaps::kMaxWorkers));
    app.add_option("--stats-interval", stats_s, "one stats line every SEC seconds (0: off)")
        ->envname("RDMAPS_STATS_INTERVAL")
        ->check(rdmaps::cli::seconds(true));
    bool keep_running = !options.exit_when_done;
    rdmaps::cli::add_switch(app, "--keep-running", keep_running, "keep serving after every worker left");
    rdmaps::cli::add_switch(app, "--rule-from-workers", options.rule_from_workers,
                            "adopt the first worker's update rule, refuse others");
    rdmaps::cli::add_switch(app, "--gpu-shard", options.gpu_shard,
                            "keep the range in GPU memory, update with the CUDA kernel");
    rdmaps::cli::add_switch(app, "--insecure", options.insecure,
                            "serve without a shared secret on a non-loopback address");
    app.add_option("--max-bytes", options.max_bytes,
                   "largest parameter table a worker may declare (0: the machine's memory)")
        ->envname("RDMAPS_MAX_BYTES")
        ->transform(rdmaps::cli::count(0));
    app.add_option("--stall-warning", stall_s, "log a worker holding the slowest clock this long (SEC; 0: off)")
        ->envname("RDMAPS_STALL_WARNING")
        ->check(rdmaps::cli::seconds(true));
    auto* launch_timeout =
        app.add_option("--launch-timeout", launch_timeout_s, "under a launcher: bound on the address exchange (SEC)")
            ->check(rdmaps::cli::seconds());
    app.add_option("--metrics", options.metrics, "serve Prometheus metrics at http://HOST:PORT/metrics (off)")
        ->envname("RDMAPS_METRICS")
        ->check(rdmaps::cli::address());
    // A switch's default_str is its value when it stands alone, so it keeps it.
    for (CLI::Option* o : app.get_options())
      if (o->get_name() != "--help") {
        o->group(group);
        if (o->get_expected_min() != 0) o->capture_default_str();
      }
    // A worker's settings: taken here, they did nothing (and the config line
    // showed them as if they did). The reconnect window comes with each hello.
    const std::set<std::string> workers_own = {"reconnect", "staging-depth", "gpu-path", "skip-pulls"};
    rdmaps::add_config_flags(app, options.config, {.only = {}, .except = workers_own});
    std::string refused_value;
    std::vector<std::pair<std::string, CLI::Option*>> refused;
    for (const std::string& name : workers_own)
      refused.emplace_back("--" + name, app.add_option("--" + name, refused_value)->expected(0, 1)->group(""));
    try {
      rdmaps::cli::parse(app, args);
    } catch (const CLI::Success& e) {
      // --help, --version: a page that never reached standard output is no success.
      return rdmaps::tools::program_end("rdmaps-server", app.exit(e));
    }
    for (const auto& [name, o] : refused)
      if (o->count())
        throw rdmaps::Error(rdmaps::Errc::kInvalidArgument,
                            name + ": a worker's setting, not a server's (give it to the workers)");
    // Taken with it, a rule's flags did nothing: the first worker's rule was adopted.
    if (options.rule_from_workers)
      for (const CLI::Option* o : app.get_options())
        if (const std::string& name = o->get_name(); name.starts_with("--") &&
                                                     rdmaps::ps::RuleParams::is_flag(name.substr(2)) &&
                                                     rdmaps::cli::on_command_line(o, args))
          throw rdmaps::Error(rdmaps::Errc::kInvalidArgument,
                              name +
                                  ": --rule-from-workers takes the update rule and its parameters from the first "
                                  "worker; give them to the workers, or leave out --rule-from-workers");
    if (!options.rule_from_workers)
      if (std::string why = rdmaps::unused_rule_flag(app, args, options.config.rule); !why.empty())
        throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, why);
    options.exit_when_done = !keep_running;
    options.stats_interval = rdmaps::cli::milliseconds_of(stats_s);
    options.stall_warning = rdmaps::cli::milliseconds_of(stall_s);
    // A launch decides what the command line did not: the environment may set
    // the counts for all ranks. An index or listen address from its variable is
    // the user's as a flag is (a job script's RDMAPS_SERVER_INDEX=$SLURM_PROCID
    // was taken for a launch of servers alone, and refused as one without workers).
    const auto from_variable = [](const CLI::Option* o) {
      const char* v = std::getenv(o->get_envname().c_str());
      return v && *v;
    };
    const bool index_given = rdmaps::cli::on_command_line(index, args) || from_variable(index),
               servers_given = rdmaps::cli::on_command_line(servers, args),
               workers_given = rdmaps::cli::on_command_line(workers, args),
               listen_on_command_line = rdmaps::cli::on_command_line(listen, args),
               listen_given = listen_on_command_line || from_variable(listen);
    // Started by a launcher as one of several ranks: the rank is the index.
    namespace launch = rdmaps::launch;
    const auto environment = launch::process_environment();
    std::optional<launch::Placement> placement;
    std::unique_ptr<launch::ServerDirectory> directory;
    if (!index_given && launch::started_with_others(environment)) {
      placement = launch::detect(environment, servers_given ? options.servers : 0);
      if (!placement->is_server())
        throw rdmaps::Error(rdmaps::Errc::kInvalidArgument,
                            placement->describe() + ": rdmaps-server runs on the first " +
                                std::to_string(placement->num_servers) +
                                " rank(s) only; start the workers on the others (mpirun -np S rdmaps-server "
                                "--servers S : -np W trainer)");
      // As rdmaps-train's ranks: the advice for a server alone (listen on
      // 127.0.0.1) fits no launched job. --insecure still says "none, knowingly".
      if (!options.insecure) launch::require_secret(!options.config.secret.empty());
      // The launch decides; a count exported beside it that disagrees is a mistake, not a default.
      if (workers_given)
        placement->check_workers(options.workers);
      else if (std::getenv("RDMAPS_WORKERS"))
        placement->check_workers(options.workers, "RDMAPS_WORKERS");
      options.index = placement->server_index();
      options.servers = placement->num_servers;
      options.workers = placement->num_workers();
      directory = std::make_unique<launch::ServerDirectory>(*placement, rdmaps::cli::milliseconds_of(launch_timeout_s),
                                                            options.config.secret, environment);
      if (listen_given)
        directory->check_listen(options.listen, listen_on_command_line ? "--listen" : "RDMAPS_LISTEN");
      else
        options.listen = directory->listen_address();
      if (!options.metrics.empty()) options.metrics = launch::port_plus(options.metrics, placement->rank, "--metrics");
    } else if (launch_timeout->count() > 0) {
      launch::refuse_launch_timeout(index_given ? "--index or RDMAPS_SERVER_INDEX" : "");
    }
    // Named as given: from the variable, the message named the flags.
    if (options.index >= options.servers) {
      const auto said = [&](const CLI::Option* o, uint32_t value) {
        if (rdmaps::cli::on_command_line(o, args)) return o->get_name() + " " + std::to_string(value);
        if (from_variable(o)) return o->get_envname() + "=" + std::to_string(value);
        return o->get_name() + " " + std::to_string(value) + " (its default)";
      };
      throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, "server index " + said(index, options.index) +
                                                              " is not below the number of servers " +
                                                              said(servers, options.servers));
    }
    failed = 1;
    rdmaps::Server server(options);
    std::string address = server.address();
    if (directory) {
      address = launch::advertised_address(*placement, address, environment);
      directory->exchange(address);
      std::fprintf(stderr, "rdmaps-server %s; addresses through %s\n", placement->describe().c_str(),
                   directory->method().c_str());
    }
    rdmaps::tools::StopOnSignal stop_on_signal(server);
    std::fprintf(stderr, "rdmaps-server %u/%u listening on %s for %u worker(s)\nconfig: %s\nmachine: %s\n",
                 options.index, options.servers, address.c_str(), options.workers,
                 rdmaps::describe_server(options.config, options.rule_from_workers).c_str(),
                 rdmaps::summary(rdmaps::probe_capabilities()).c_str());
    if (!server.metrics_address().empty())
      std::fprintf(stderr, "rdmaps-server: metrics at http://%s/metrics\n", server.metrics_address().c_str());
    server.run();
    auto s = server.stats();
    std::fprintf(stderr, "rdmaps-server: done: %s\n", rdmaps::tools::server_done(s).c_str());
    if (s.final_checkpoint_failed) {
      std::fprintf(stderr,
                   "rdmaps-server: error: the final checkpoint could not be written (see above): the trained "
                   "model is not saved\n");
      return 1;
    }
    return 0;
  } catch (const rdmaps::Error& e) {
    // The server names a flag it was given (the metrics port is in use); the user may have set its variable.
    std::fprintf(stderr, "rdmaps-server: error (%s): %s\n", rdmaps::errc_name(e.code()),
                 rdmaps::cli::name_source(app, args, e.what()).c_str());
    return failed;
  } catch (...) {  // a thread that could not start, no memory: said, not an abort
    rdmaps::tools::report_error("rdmaps-server", "a smaller model or fewer --workers?");
    return failed;
  }
}
