// rdmaps-server: one parameter-server process.
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "rdmaps/error.h"
#include "rdmaps/server.h"
#include "src/capabilities.h"
#include "src/launch/server_directory.h"

namespace {

rdmaps::Server* g_server = nullptr;
void on_signal(int) {
  if (g_server) g_server->stop();
}

void usage() {
  std::printf(
      "usage: rdmaps-server [flags]\n\n"
      "  --listen HOST:PORT      address to serve on (0.0.0.0:13337)          [RDMAPS_LISTEN]\n"
      "  --index I               this server's rank among --servers (0)        [RDMAPS_SERVER_INDEX]\n"
      "  --servers S             number of servers (1)                         [RDMAPS_SERVERS]\n"
      "  --workers W             workers the clock waits for (1)               [RDMAPS_WORKERS]\n"
      "  --stats-interval SEC    one stats line every SEC seconds (10; 0 off)  [RDMAPS_STATS_INTERVAL]\n"
      "  --keep-running          keep serving after every worker left\n"
      "  --rule-from-workers     adopt the first worker's update rule and refuse others\n"
      "  --gpu-shard             keep the range in GPU memory, update with the CUDA kernel\n"
      "  --insecure              serve without a shared secret on a non-loopback address\n"
      "  --max-bytes N           largest parameter table a worker may declare (machine memory) [RDMAPS_MAX_BYTES]\n"
      "  --stall-warning SEC     log a worker holding the slowest clock this long (0 off; 60) [RDMAPS_STALL_WARNING]\n"
      "  --launch-timeout SEC    under a launcher: bound on the address exchange (120)\n"
      "  --metrics HOST:PORT     serve Prometheus metrics at http://HOST:PORT/metrics (off) [RDMAPS_METRICS]\n"
      "\n"
      "Under mpirun, srun or torchrun (several ranks, no --index) the rank is the index: the\n"
      "first --servers ranks run rdmaps-server, the others are the job's workers, e.g.\n"
      "  mpirun -x RDMAPS_SECRET -np 2 rdmaps-server --servers 2 : -np 8 python3 train.py\n"
      "%s",
      rdmaps::config_help());
}

uint64_t number(const std::string& flag, const std::string& value, uint64_t max = UINT64_MAX) {
  char* end = nullptr;
  errno = 0;
  uint64_t n = std::strtoull(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || value[0] == '-' || errno == ERANGE)
    throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, flag + ": '" + value + "' is not a non-negative integer");
  if (n > max)
    throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, flag + ": " + value + " is more than " + std::to_string(max));
  return n;
}
// Counts that must fit their 32-bit field: 4294967297 is an error, not 1.
uint32_t count(const std::string& flag, const std::string& value) {
  return static_cast<uint32_t>(number(flag, value, UINT32_MAX));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    rdmaps::ServerOptions options;
    options.stats_interval = std::chrono::seconds(10);
    options.stall_warning = std::chrono::seconds(60);
    auto env = [](const char* name, auto&& apply) {
      if (const char* v = std::getenv(name)) apply(std::string(v), std::string(name));
    };
    env("RDMAPS_LISTEN", [&](const std::string& v, const std::string&) { options.listen = v; });
    env("RDMAPS_SERVER_INDEX", [&](const std::string& v, const std::string& n) { options.index = count(n, v); });
    env("RDMAPS_SERVERS", [&](const std::string& v, const std::string& n) { options.servers = count(n, v); });
    env("RDMAPS_WORKERS", [&](const std::string& v, const std::string& n) { options.workers = count(n, v); });
    env("RDMAPS_STALL_WARNING", [&](const std::string& v, const std::string& n) {
      options.stall_warning = std::chrono::seconds(number(n, v, 86400));
    });
    env("RDMAPS_METRICS", [&](const std::string& v, const std::string&) { options.metrics = v; });
    env("RDMAPS_MAX_BYTES", [&](const std::string& v, const std::string& n) { options.max_bytes = number(n, v); });
    env("RDMAPS_STATS_INTERVAL", [&](const std::string& v, const std::string& n) {
      options.stats_interval = std::chrono::seconds(number(n, v));
    });
    bool index_given = false, servers_given = false, workers_given = false, listen_given = false;
    double launch_timeout_s = 120;
    std::vector<std::string> args(argv + 1, argv + argc), rest;
    rdmaps::parse_config(options.config, args, &rest);
    for (size_t i = 0; i < rest.size(); ++i) {
      const std::string& flag = rest[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= rest.size())
          throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, "flag " + flag + " needs a value");
        return rest[++i];
      };
      if (flag == "--help" || flag == "-h") {
        usage();
        return 0;
      } else if (flag == "--listen") {
        options.listen = value();
        listen_given = true;
      } else if (flag == "--index") {
        options.index = count(flag, value());
        index_given = true;
      } else if (flag == "--servers") {
        options.servers = count(flag, value());
        servers_given = true;
      } else if (flag == "--workers") {
        options.workers = count(flag, value());
        workers_given = true;
      } else if (flag == "--launch-timeout") {
        launch_timeout_s = static_cast<double>(number(flag, value(), 86400));
        if (launch_timeout_s == 0) throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, flag + ": must be at least 1");
      } else if (flag == "--stats-interval") {
        options.stats_interval = std::chrono::seconds(number(flag, value()));
      } else if (flag == "--keep-running") {
        options.exit_when_done = false;
      } else if (flag == "--rule-from-workers") {
        options.rule_from_workers = true;
      } else if (flag == "--gpu-shard") {
        options.gpu_shard = true;
      } else if (flag == "--insecure") {
        options.insecure = true;
      } else if (flag == "--stall-warning") {
        options.stall_warning = std::chrono::seconds(number(flag, value(), 86400));
      } else if (flag == "--metrics") {
        options.metrics = value();
      } else if (flag == "--max-bytes") {
        options.max_bytes = number(flag, value());
      } else {
        throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, "unknown flag " + flag + " (see --help)");
      }
    }
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
      if (workers_given && options.workers != placement->num_workers())
        throw rdmaps::Error(rdmaps::Errc::kInvalidArgument, "--workers " + std::to_string(options.workers) +
                                                                " differs from the " +
                                                                std::to_string(placement->num_workers()) +
                                                                " worker ranks of this launch; leave it out");
      options.index = placement->server_index();
      options.servers = placement->num_servers;
      options.workers = placement->num_workers();
      directory = std::make_unique<launch::ServerDirectory>(
          *placement, std::chrono::milliseconds(static_cast<int64_t>(launch_timeout_s * 1000)), environment);
      if (!listen_given) options.listen = directory->listen_address();
    }
    rdmaps::Server server(options);
    std::string address = server.address();
    if (directory) {
      address = launch::advertised_address(*placement, address, environment);
      directory->exchange(address);
      std::fprintf(stderr, "rdmaps-server %s; addresses through %s\n", placement->describe().c_str(),
                   directory->method().c_str());
    }
    g_server = &server;
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::fprintf(stderr, "rdmaps-server %u/%u listening on %s for %u worker(s)\nconfig: %s\nmachine: %s\n",
                 options.index, options.servers, address.c_str(), options.workers,
                 rdmaps::describe(options.config).c_str(), rdmaps::summary(rdmaps::probe_capabilities()).c_str());
    if (!server.metrics_address().empty())
      std::fprintf(stderr, "rdmaps-server: metrics at http://%s/metrics\n", server.metrics_address().c_str());
    server.run();
    auto s = server.stats();
    std::fprintf(stderr,
                 "rdmaps-server: done: %llu pushes, %llu pulls, %llu clocks, %llu rejected, %llu dropped, "
                 "longest set-up pause %.1f ms, resumed with %llu updates, %llu checkpoints (the newest holds %llu "
                 "updates)\n",
                 static_cast<unsigned long long>(s.pushes), static_cast<unsigned long long>(s.pulls),
                 static_cast<unsigned long long>(s.clocks), static_cast<unsigned long long>(s.rejected),
                 static_cast<unsigned long long>(s.dropped), s.longest_setup_pause_us / 1e3,
                 static_cast<unsigned long long>(s.resumed_updates), static_cast<unsigned long long>(s.checkpoints),
                 static_cast<unsigned long long>(s.checkpoint_updates));
    return 0;
  } catch (const rdmaps::Error& e) {
    std::fprintf(stderr, "rdmaps-server: error (%s): %s\n", rdmaps::errc_name(e.code()), e.what());
    return 1;
  }
}
