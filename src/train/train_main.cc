// rdmaps-train: asynchronous training of an MLP on Fashion-MNIST through the
// parameter server. With no role it starts one server and four workers as
// local processes (the embedded default); --role server|worker runs one
// process per node on a cluster (docs/cluster.md).
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>

#include "rdmaps/error.h"
#include "rdmaps/server.h"
#include "src/api/cli.h"
#include "src/api/config_flags.h"
#include "src/api/config_text.h"
#include "src/launch/server_directory.h"
#include "src/launch/server_list.h"
#include "src/tools/child_process.h"
#include "src/tools/program_start.h"
#include "src/tools/server_done.h"
#include "src/tools/stop_on_signal.h"
#include "src/train/driver.h"
#include "src/train/options.h"
#include "src/train/virtual_workers.h"
#include "src/train/worker.h"

namespace rdmaps::train {
namespace {

void write_fd(int fd, const std::string& line) {
  std::string l = line + "\n";
  if (::write(fd, l.data(), l.size()) < 0) {
  }
}

// A local run's child tells the driver its error's kind, which the run's
// last line then names (a worker's damaged data file ended the run as
// "error (peer-gone)"); what() it says on stderr itself.
void say_failed(int fd, Errc kind) {
  if (fd >= 0) write_fd(fd, std::string("failed ") + errc_name(kind));
}

// The same in a catch, for the exception in flight.
void report_failure_kind(int fd) {
  try {
    throw;
  } catch (const Error& e) {
    say_failed(fd, e.code());
  } catch (...) {
  }
}

// The run's exit status: a final checkpoint that failed loses the trained
// model, so the run has failed, whoever started this server (docs/cluster.md).
int exit_status(const ServerStats& s, uint32_t index, int report_fd) {
  if (!s.final_checkpoint_failed) return 0;
  say_failed(report_fd, Errc::kIo);
  std::fprintf(stderr,
               "rdmaps-train server %u: error: the final checkpoint could not be written (see above): the trained "
               "model is not saved\n",
               index);
  return 1;
}

// `directory`: a launched job's, through which this server tells the others
// where it listens.
int run_server_role(const Options& o, launch::ServerDirectory* directory = nullptr,
                    const launch::Placement* placement = nullptr) {
  ServerOptions so;
  so.listen = o.report_fd >= 0 ? "127.0.0.1:0" : o.listen;
  so.index = o.index;
  so.servers = o.servers;
  so.workers = o.workers;
  so.gpu_shard = o.gpu_shard;
  so.insecure = o.insecure;
  so.config = config_of(o);
  // The virtual workers' schedule holds their bound and their clients run
  // without one: a server given --sync refused each of them (a local run's
  // servers are given --virtual-workers too).
  if (o.virtual_workers) so.config.staleness = kInfiniteStaleness;
  so.metrics = o.metrics;
  if (o.report_fd < 0) so.stats_interval = std::chrono::seconds(10);
  so.stall_warning = std::chrono::seconds(60);  // a stopped worker holds the job: say who
  so.log_connections = o.report_fd < 0;         // embedded: the driver's progress line speaks for the server
  Server server(so);
  std::string address = server.address();
  if (directory) {
    address = launch::advertised_address(*placement, address);
    directory->exchange(address);
  }
  if (o.report_fd < 0)
    std::fprintf(stderr, "rdmaps-train server %u/%u on %s: %s%s\n", o.index, o.servers, address.c_str(),
                 describe_server(so.config).c_str(),
                 so.metrics.empty() ? "" : ("; metrics at http://" + server.metrics_address() + "/metrics").c_str());
  if (o.report_fd < 0) {
    tools::StopOnSignal stop_on_signal(server);  // SIGTERM: the final checkpoint, then the done line
    server.run();
    auto s = server.stats();
    std::fprintf(stderr, "rdmaps-train server %u: done: %s\n", o.index, tools::server_done(s).c_str());
    return exit_status(s, o.index, o.report_fd);
  }
  write_fd(o.report_fd, "port " + server.address().substr(server.address().rfind(':') + 1));
  // For the summary: a run that went on from a checkpoint said so nowhere in it.
  if (const uint64_t resumed = server.stats().resumed_updates; resumed > 0)
    write_fd(o.report_fd, "resumed " + std::to_string(resumed));
  // Staleness and traffic for the driver's progress line; the p50 is text
  // (">=4096" in the histogram's last bucket), the max exact.
  auto send_stats = [&] {
    auto s = server.stats();
    char line[160];
    std::snprintf(line, sizeof(line), "stats %llu %s %llu %llu", static_cast<unsigned long long>(s.pushes),
                  s.staleness_quantile_text(0.5).c_str(), static_cast<unsigned long long>(s.staleness_max),
                  static_cast<unsigned long long>(s.dropped));
    write_fd(o.report_fd, line);
  };
  // SIGTERM or Ctrl-C (the whole job's): the final checkpoint, then the histogram, as a standalone server.
  tools::StopOnSignal stop_on_signal(server);
  std::atomic<bool> done{false};
  std::exception_ptr failed;
  std::thread serving([&] {
    try {
      server.run();  // returns once every worker left
    } catch (...) {  // a lane that failed: said by main below (escaping the thread, it aborted the process)
      failed = std::current_exception();
    }
    done = true;
  });
  // Stopped, not done, said at once: it exits 0 (its final checkpoint
  // written), and the driver blamed the worker that lost it.
  bool said_stopped = false;
  auto say_stopped = [&] {
    if (const int signal = stop_on_signal.taken(); signal && !said_stopped) {
      write_fd(o.report_fd, "stopped " + std::to_string(signal));
      said_stopped = true;
    }
  };
  while (!done) {
    for (int i = 0; i < 10 && !done; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      say_stopped();
    }
    send_stats();
  }
  serving.join();
  if (failed) std::rethrow_exception(failed);
  send_stats();
  say_stopped();
  auto s = server.stats();
  std::string histogram = "histogram";
  for (size_t tau = 0; tau < s.staleness.size(); ++tau) {
    if (!s.staleness[tau]) continue;
    const bool overflow = tau + 1 == s.staleness.size();  // every tau from here on
    histogram += " " + std::string(overflow ? ">=" : "") + std::to_string(tau) + ":" + std::to_string(s.staleness[tau]);
  }
  write_fd(o.report_fd, histogram);
  return exit_status(s, o.index, o.report_fd);  // the driver names this server when it exits 1
}

ClientOptions client_options(const Options& o) {
  ClientOptions co;
  if (o.servers_list.empty()) bad_flag("--servers-list", "a worker needs the servers' addresses");
  co.servers = launch::server_list(o.servers_list, "--servers-list");
  co.worker = o.worker;
  co.workers = o.workers;
  co.config = config_of(o);
  co.timeout = std::chrono::seconds(120);
  co.metrics = o.metrics;
  return co;
}

WorkerOptions worker_options(const Options& o) {
  WorkerOptions wo;
  wo.worker = o.worker;
  wo.workers = o.workers;
  wo.epochs = o.epochs;
  wo.batch = o.batch;
  wo.seed = o.seed;
  wo.evaluate = o.worker == 0;
  wo.evaluate_aside = true;  // a test pass must not hold the others (evaluator.h)
  wo.evals_per_epoch = o.evals_per_epoch;
  wo.evals_per_epoch_given = o.evals_per_epoch_given;
  wo.straggle = o.straggler.random || static_cast<int>(o.worker) == o.straggler.worker ? o.straggler.factor : 1.0;
  wo.straggle_chance = o.straggler.random ? 1.0 / o.workers : 1.0;
  wo.train_limit = o.train_limit;
  wo.test_limit = o.test_limit;
  wo.lr = o.lr;
  wo.cosine = o.schedule == "cosine";
  wo.say_metrics = o.report_fd < 0;
  return wo;
}

Report reporter(const Options& o) {
  return [fd = o.report_fd](const std::string& line) {
    if (fd >= 0) {
      write_fd(fd, line);
    } else {
      // Each line as it comes: stdout is a pipe or file under srun and mpirun,
      // where it would otherwise be held back until the process exits.
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
  };
}

// Passes each line on and keeps the last evaluation's accuracy: the job's
// result, which --expect-accuracy checks (exit 3 below it).
class AccuracyKeeper {
 public:
  AccuracyKeeper(const Options& o, std::string who) : o_(o), who_(std::move(who)), report_(reporter(o)) {}
  Report report() {
    return [this](const std::string& line) {
      if (auto e = parse_eval_line(line)) accuracy_ = e->accuracy;
      report_(line);
    };
  }
  int exit_status() const {
    if (accuracy_ >= 0 && o_.report_fd < 0)
      std::fprintf(stderr, "rdmaps-train %s: final test accuracy %.4f after %u epochs\n", who_.c_str(), accuracy_,
                   o_.epochs);
    if (accuracy_ >= 0 && o_.expect_accuracy >= 0 && accuracy_ < o_.expect_accuracy) {
      std::fprintf(stderr, "rdmaps-train: final test accuracy %.4f is below --expect-accuracy %.4f\n", accuracy_,
                   o_.expect_accuracy);
      return 3;
    }
    return 0;
  }

 private:
  const Options& o_;
  std::string who_;
  Report report_;
  double accuracy_ = -1;
};

int run_worker_role(const Options& o) {
  if (o.worker >= o.workers)
    bad_flag("--worker", std::to_string(o.worker) + " is not below --workers " + std::to_string(o.workers));
  TrainTest data = load_dataset_dir(o.data);
  // The evaluating worker holds the job's result: --expect-accuracy is its to check.
  AccuracyKeeper keeper(o, "worker " + std::to_string(o.worker));
  run_worker(client_options(o), worker_options(o), data, keeper.report());
  return keeper.exit_status();
}

// One rank of a job that mpirun, srun or torchrun started: the rank says the
// role, the launcher's PMIx store or the rendezvous the addresses.
int run_launched(Options o, const launch::Placement& p) {
  if (o.workers_given) p.check_workers(o.workers);
  if (o.virtual_workers) bad_flag("--virtual-workers", "runs in one process, not under a launcher");
  launch::require_secret(!config_of(o).secret.empty());
  if (!o.summary_flags.empty())
    bad_flag(o.summary_flags.front(),
             "only a local run writes a summary; a launched job's ranks read no such flag "
             "(the evaluating worker prints its accuracy)");
  o.servers = p.num_servers;
  o.workers = p.num_workers();
  // A launch spans hosts: shm, a local run's default, left its ranks on
  // other nodes unreachable ("no UCX transport reaches the peer").
  if (!o.transport_given) o.transport = "auto";
  check_straggler(o);
  if (!o.metrics.empty()) o.metrics = launch::port_plus(o.metrics, p.rank, "--metrics");
  const auto timeout = cli::milliseconds_of(o.launch_timeout_s);
  launch::ServerDirectory directory(p, timeout, config_of(o).secret);
  std::fprintf(stderr, "rdmaps-train %s; addresses through %s\n", p.describe().c_str(), directory.method().c_str());
  if (p.is_server()) {
    o.index = p.server_index();
    o.listen = directory.listen_address();
    return run_server_role(o, &directory, &p);
  }
  o.worker = p.worker_index();
  o.servers_list.clear();
  for (const std::string& s : directory.exchange("")) o.servers_list += (o.servers_list.empty() ? "" : ",") + s;
  return run_worker_role(o);
}

int run_virtual_role(const Options& o) {
  if (!o.metrics.empty())
    bad_flag("--metrics", "virtual workers share one process and so would share one port; give it to the servers");
  TrainTest data = load_dataset_dir(o.data);
  AccuracyKeeper keeper(o, "virtual workers");
  run_virtual_workers(client_options(o), worker_options(o), o.virtual_workers, DelaySpec::parse("--delay", o.delay),
                      o.straggler, data, keeper.report());
  return keeper.exit_status();
}

}  // namespace
}  // namespace rdmaps::train

namespace {
int run(int argc, char** argv) {
  using namespace rdmaps::train;
  int report_fd = -1;
  try {
    Options o = parse_options(argc, argv);
    report_fd = o.report_fd;
    const auto env = rdmaps::launch::process_environment();
    if (!o.role_given && rdmaps::launch::started_with_others(env))
      return run_launched(o, *rdmaps::launch::detect(env, o.servers_given ? o.servers : 0));
    if (o.launch_timeout_given) rdmaps::launch::refuse_launch_timeout(o.role_given ? "--role" : "");
    check_straggler(o);
    if (o.role == "server") return run_server_role(o);
    if (o.role == "worker") return run_worker_role(o);
    if (o.role == "virtual") return run_virtual_role(o);
    if (o.role != "driver") bad_flag("--role", "'" + o.role + "' is not server, worker, virtual or driver");
    return run_driver(o);
  } catch (...) {
    report_failure_kind(report_fd);
    return rdmaps::tools::report_error("rdmaps-train", "a smaller --batch or fewer --workers?");
  }
}
}  // namespace

int main(int argc, char** argv) {
  if (!rdmaps::tools::program_start("rdmaps-train")) return 1;
  rdmaps::tools::end_with_parent("rdmaps-train");
  return rdmaps::tools::program_end("rdmaps-train", run(argc, argv));
}
