// rdmaps-train: asynchronous training of an MLP on Fashion-MNIST through the
// parameter server. With no role it starts one server and four workers as
// local processes (the embedded default); --role server|worker runs one
// process per node on a cluster (docs/cluster.md).
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "rdmaps/error.h"
#include "rdmaps/server.h"
#include "src/tools/child_process.h"
#include "src/train/dataset.h"
#include "src/train/worker.h"

namespace rdmaps::train {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string role = "driver";
  uint32_t workers = 4, servers = 1, epochs = 15, batch = 64;
  std::string transport = "shm", data = kDefaultDataDir, out = "rdmaps-train-out";
  // Default: fully asynchronous with DC-ASGD-a (measured in docs/benchmarks.md).
  std::string staleness = "inf", dc = "adaptive";
  float lr = 0.1f, lambda = 0.04f, lambda0 = 1.0f;
  // Constant by default, as every table in docs/benchmarks.md was measured;
  // cosine lifts the default run by about 0.4 points (measured there too).
  std::string schedule = "constant";  ///< learning rate over the run: constant or cosine
  int straggler = -1;
  bool straggler_random = false;  ///< --straggler random:F: each step, each worker with chance 1/workers
  double straggle_factor = 1.0;
  uint64_t seed = 42;
  bool json = false, compare = false;
  double expect_accuracy = -1;  ///< exit non-zero below this final accuracy
  size_t train_limit = 0, test_limit = 0;
  // Cluster roles.
  std::string listen = "0.0.0.0:13337", servers_list;
  uint32_t index = 0, worker = 0;
  int report_fd = -1;
  std::string label;
};

[[noreturn]] void bad_flag(const std::string& flag, const std::string& why) {
  throw Error(Errc::kInvalidArgument, flag + ": " + why + " (see --help)");
}

uint64_t to_u64(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  if (v.empty() || v[0] == '-') bad_flag(flag, "'" + v + "' is not a non-negative integer");
  uint64_t n = std::strtoull(v.c_str(), &end, 10);
  if (*end) bad_flag(flag, "'" + v + "' is not a non-negative integer");
  return n;
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
      "  --transport shm|tcp       (shm)\n"
      "  --sync | --async | --staleness S   consistency: BSP, fully async (default), SSP\n"
      "  --dc off|constant|adaptive         delay compensation: SGD, DC-ASGD-c, DC-ASGD-a (adaptive)\n"
      "  --lr X --lambda X --lambda0 X      (0.1, 0.04, 1.0)\n"
      "  --schedule constant|cosine         learning rate over the run; cosine decays lr to 5 %% (constant)\n"
      "  --epochs E --batch B      (15, 64)\n"
      "  --straggler K:FACTOR      worker K sleeps so that it runs FACTOR times slower\n"
      "  --straggler random:FACTOR each step, each worker is that slow with chance 1/workers\n"
      "  --data DIR                IDX files (%s)\n"
      "  --out DIR                 where metrics.csv, accuracy.png, summary.json go (rdmaps-train-out)\n"
      "  --json                    print the summary as one JSON object\n"
      "  --compare                 sequential SGD, BSP, SSP(3), ASGD, DC-ASGD-c, DC-ASGD-a: one table, one plot\n"
      "  --seed N --train-limit N --test-limit N\n"
      "  --expect-accuracy X       exit with status 3 if the final test accuracy is below X\n"
      "  cluster: --role server --listen HOST:PORT --index I --servers S --workers W [...]\n"
      "           --role worker --worker I --servers-list H:P,H:P --workers W [...]\n",
      kDefaultDataDir);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) bad_flag(flag, "needs a value");
      return argv[++i];
    };
    if (flag == "--help" || flag == "-h") {
      usage();
      std::exit(0);
    } else if (flag == "--role")
      o.role = value();
    else if (flag == "--workers")
      o.workers = static_cast<uint32_t>(to_u64(flag, value()));
    else if (flag == "--servers")
      o.servers = static_cast<uint32_t>(to_u64(flag, value()));
    else if (flag == "--epochs")
      o.epochs = static_cast<uint32_t>(to_u64(flag, value()));
    else if (flag == "--batch")
      o.batch = static_cast<uint32_t>(to_u64(flag, value()));
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
    else if (flag == "--lr")
      o.lr = static_cast<float>(to_double(flag, value()));
    else if (flag == "--schedule")
      o.schedule = value();
    else if (flag == "--lambda")
      o.lambda = static_cast<float>(to_double(flag, value()));
    else if (flag == "--lambda0")
      o.lambda0 = static_cast<float>(to_double(flag, value()));
    else if (flag == "--seed")
      o.seed = to_u64(flag, value());
    else if (flag == "--json")
      o.json = true;
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
      o.index = static_cast<uint32_t>(to_u64(flag, value()));
    else if (flag == "--worker")
      o.worker = static_cast<uint32_t>(to_u64(flag, value()));
    else if (flag == "--servers-list")
      o.servers_list = value();
    else if (flag == "--report-fd")
      o.report_fd = static_cast<int>(to_u64(flag, value()));
    else if (flag == "--label")
      o.label = value();
    else if (flag == "--straggler") {
      std::string v = value();
      auto colon = v.find(':');
      if (colon == std::string::npos) bad_flag(flag, "'" + v + "' is not K:FACTOR or random:FACTOR (e.g. 0:4)");
      o.straggler_random = v.substr(0, colon) == "random";
      o.straggler = o.straggler_random ? -1 : static_cast<int>(to_u64(flag, v.substr(0, colon)));
      o.straggle_factor = to_double(flag, v.substr(colon + 1));
      if (o.straggle_factor < 1.0) bad_flag(flag, "FACTOR must be at least 1");
    } else {
      bad_flag(flag, "unknown flag");
    }
  }
  if (o.transport != "shm" && o.transport != "tcp" && o.transport != "auto")
    bad_flag("--transport", "'" + o.transport + "' is not shm, tcp or auto");
  if (o.schedule != "constant" && o.schedule != "cosine")
    bad_flag("--schedule", "'" + o.schedule + "' is not constant or cosine");
  if (o.dc != "off" && o.dc != "constant" && o.dc != "adaptive")
    bad_flag("--dc", "'" + o.dc + "' is not off, constant or adaptive");
  if (o.workers == 0 || o.servers == 0 || o.epochs == 0 || o.batch == 0)
    bad_flag("--workers/--servers/--epochs/--batch", "must be at least 1");
  if (o.straggler >= static_cast<int>(o.workers))
    bad_flag("--straggler", "worker " + std::to_string(o.straggler) + " does not exist");
  return o;
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
  parse_config(c, args, nullptr);
  return c;
}

std::vector<std::string> passthrough(const Options& o) {
  return {"--workers",     std::to_string(o.workers),
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
}

void write_fd(int fd, const std::string& line) {
  std::string l = line + "\n";
  if (::write(fd, l.data(), l.size()) < 0) {
  }
}

// ---- roles -------------------------------------------------------------------

int run_server_role(const Options& o) {
  ServerOptions so;
  so.listen = o.report_fd >= 0 ? "127.0.0.1:0" : o.listen;
  so.index = o.index;
  so.servers = o.servers;
  so.workers = o.workers;
  so.config = config_of(o);
  if (o.report_fd < 0) so.stats_interval = std::chrono::seconds(10);
  so.log_connections = o.report_fd < 0;  // embedded: the driver's progress line speaks for the server
  Server server(so);
  if (o.report_fd < 0)
    std::fprintf(stderr, "rdmaps-train server %u/%u on %s: %s\n", o.index, o.servers, server.address().c_str(),
                 describe(so.config).c_str());
  if (o.report_fd < 0) {
    server.run();
    return 0;
  }
  write_fd(o.report_fd, "port " + server.address().substr(server.address().rfind(':') + 1));
  // Staleness and traffic for the driver's progress line.
  auto send_stats = [&] {
    auto s = server.stats();
    uint64_t max_tau = 0;
    for (size_t t = 0; t < s.staleness.size(); ++t)
      if (s.staleness[t]) max_tau = t;
    char line[160];
    std::snprintf(line, sizeof(line), "stats %llu %.0f %llu %llu", static_cast<unsigned long long>(s.pushes),
                  s.staleness_quantile(0.5), static_cast<unsigned long long>(max_tau),
                  static_cast<unsigned long long>(s.dropped));
    write_fd(o.report_fd, line);
  };
  std::atomic<bool> done{false};
  std::thread serving([&] {
    server.run();  // returns once every worker left
    done = true;
  });
  while (!done) {
    for (int i = 0; i < 10 && !done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    send_stats();
  }
  serving.join();
  send_stats();
  return 0;
}

int run_worker_role(const Options& o) {
  TrainTest data = load_dataset_dir(o.data);
  ClientOptions co;
  std::stringstream list(o.servers_list);
  for (std::string item; std::getline(list, item, ',');) co.servers.push_back(item);
  if (co.servers.empty()) bad_flag("--servers-list", "a worker needs the servers' addresses");
  co.worker = o.worker;
  co.config = config_of(o);
  co.timeout = std::chrono::seconds(120);
  WorkerOptions wo;
  wo.worker = o.worker;
  wo.workers = o.workers;
  wo.epochs = o.epochs;
  wo.batch = o.batch;
  wo.seed = o.seed;
  wo.evaluate = o.worker == 0;
  wo.straggle = o.straggler_random || static_cast<int>(o.worker) == o.straggler ? o.straggle_factor : 1.0;
  wo.straggle_chance = o.straggler_random ? 1.0 / o.workers : 1.0;
  wo.train_limit = o.train_limit;
  wo.test_limit = o.test_limit;
  wo.lr = o.lr;
  wo.cosine = o.schedule == "cosine";
  run_worker(co, wo, data, [&](const std::string& line) {
    if (o.report_fd >= 0)
      write_fd(o.report_fd, line);
    else
      std::printf("worker %u: %s\n", o.worker, line.c_str());
  });
  return 0;
}

// ---- driver ------------------------------------------------------------------

struct ChildProcess {
  tools::Child child;
  std::string buffer, name;
  bool eof = false;
  int fd() const { return child.read_fd; }
};

ChildProcess spawn(const std::vector<std::string>& args, const std::string& name) {
  ChildProcess c;
  c.name = name;
  c.child = tools::spawn_self("rdmaps-train", args);
  return c;
}

// Next complete line already read from a child (see pump()), if any.
std::optional<std::string> next_line(ChildProcess& c) {
  auto nl = c.buffer.find('\n');
  if (nl == std::string::npos) return std::nullopt;
  std::string line = c.buffer.substr(0, nl);
  c.buffer.erase(0, nl + 1);
  return line;
}

void pump(std::vector<ChildProcess*>& children, int timeout_ms) {
  std::vector<pollfd> fds;
  for (auto* c : children)
    if (!c->eof) fds.push_back({c->fd(), POLLIN, 0});
  if (fds.empty()) return;
  if (::poll(fds.data(), fds.size(), timeout_ms) <= 0) return;
  size_t k = 0;
  for (auto* c : children) {
    if (c->eof) continue;
    if (fds[k++].revents == 0) continue;
    char buf[4096];
    ssize_t n = ::read(c->fd(), buf, sizeof(buf));
    if (n <= 0)
      c->eof = true;
    else
      c->buffer.append(buf, static_cast<size_t>(n));
  }
}

int wait_exit(ChildProcess& c) { return tools::wait_child(c.child); }

struct Point {
  double seconds, epoch, accuracy, loss;
  uint64_t updates;
};

struct RunResult {
  std::string label;
  double seconds = 0, final_accuracy = 0;
  std::optional<double> time_to_85;
  uint64_t updates = 0, pushed = 0, pulled = 0, pulls = 0, skipped = 0;
  uint64_t straggled = 0;  ///< steps after which a worker slept (--straggler)
  double tau_p50 = 0;
  uint64_t tau_max = 0, dropped = 0;
  std::vector<Point> curve;
};

std::string human_bytes(double b) {
  char buf[32];
  if (b >= 1e9)
    std::snprintf(buf, sizeof(buf), "%.2f GB", b / 1e9);
  else
    std::snprintf(buf, sizeof(buf), "%.1f MB", b / 1e6);
  return buf;
}

RunResult run_local(const Options& o, bool progress) {
  RunResult r;
  r.label = o.label.empty() ? "run" : o.label;
  std::vector<ChildProcess> servers, workers;
  std::string list;
  for (uint32_t i = 0; i < o.servers; ++i) {
    auto args = passthrough(o);
    args.insert(args.end(), {"--role", "server", "--index", std::to_string(i)});
    servers.push_back(spawn(args, "server " + std::to_string(i)));
  }
  for (auto& s : servers) {
    std::vector<ChildProcess*> one = {&s};
    auto deadline = Clock::now() + std::chrono::seconds(30);
    std::optional<std::string> line;
    while (!(line = next_line(s)) && !s.eof && Clock::now() < deadline) pump(one, 100);
    if (!line || line->rfind("port ", 0) != 0)
      throw Error(Errc::kIo, s.name + " did not report its port within 30 s (see its output above)");
    list += (list.empty() ? "" : ",") + ("127.0.0.1:" + line->substr(5));
  }
  for (uint32_t w = 0; w < o.workers; ++w) {
    auto args = passthrough(o);
    args.insert(args.end(), {"--role", "worker", "--worker", std::to_string(w), "--servers-list", list});
    if (o.straggler >= 0 || o.straggler_random)
      args.insert(args.end(),
                  {"--straggler", (o.straggler_random ? std::string("random") : std::to_string(o.straggler)) + ":" +
                                      std::to_string(o.straggle_factor)});
    workers.push_back(spawn(args, "worker " + std::to_string(w)));
  }
  std::vector<ChildProcess*> all;
  for (auto& c : servers) all.push_back(&c);
  for (auto& c : workers) all.push_back(&c);

  if (progress)
    std::fprintf(stderr,
                 "rdmaps-train [%s]: %u server(s), %u worker(s), %s; %u epochs of batch %u, %s lr schedule, data %s\n",
                 r.label.c_str(), o.servers, o.workers, describe(config_of(o)).c_str(), o.epochs, o.batch,
                 o.schedule.c_str(), o.data.c_str());
  std::optional<Clock::time_point> start;
  std::vector<double> epoch(o.workers, 0), loss(o.workers, 0);
  std::vector<uint64_t> pushed(o.workers, 0), pulled(o.workers, 0);
  std::vector<uint64_t> server_pushes(o.servers, 0);
  double accuracy = 0;
  auto last_print = Clock::now();
  size_t finished = 0;
  while (finished < workers.size()) {
    pump(all, 200);
    for (size_t i = 0; i < all.size(); ++i) {
      ChildProcess& c = *all[i];
      while (auto line = next_line(c)) {
        std::istringstream in(*line);
        std::string kind;
        in >> kind;
        size_t w = i - servers.size();
        if (kind == "stats") {
          uint64_t pushes, tau_max, dropped;
          double p50;
          in >> pushes >> p50 >> tau_max >> dropped;
          server_pushes[i] = pushes;
          r.tau_p50 = p50;
          r.tau_max = std::max(r.tau_max, tau_max);
          r.dropped = dropped;
        } else if (kind == "progress") {
          uint64_t steps;
          in >> steps >> epoch[w] >> loss[w] >> pushed[w] >> pulled[w];
        } else if (kind == "eval") {
          Point p{};
          in >> p.epoch >> p.accuracy >> p.loss >> p.updates;
          if (!start) start = Clock::now();  // the first evaluation comes right after the start barrier
          p.seconds = std::chrono::duration<double>(Clock::now() - *start).count();
          accuracy = p.accuracy;
          if (!r.time_to_85 && p.accuracy >= 0.85) r.time_to_85 = p.seconds;
          r.curve.push_back(p);
        } else if (kind == "done") {
          uint64_t steps, bytes_in, bytes_out, pulls, skipped, straggled = 0;
          double compute;
          in >> steps >> bytes_in >> bytes_out >> pulls >> skipped >> compute >> straggled;
          r.updates += steps;
          r.pushed += bytes_in;
          r.pulled += bytes_out;
          r.pulls += pulls;
          r.skipped += skipped;
          r.straggled += straggled;
          ++finished;
        }
      }
      if (c.eof && i >= servers.size() && c.fd() >= 0) {
        int status = wait_exit(c);
        if (status != 0)
          throw Error(Errc::kInternal,
                      c.name + " failed (exit status " + std::to_string(status) + "); its error is above");
      }
    }
    if (progress && start && Clock::now() - last_print > std::chrono::milliseconds(250)) {
      last_print = Clock::now();
      double t = std::chrono::duration<double>(last_print - *start).count();
      double e = 0, l = 0;
      for (uint32_t w = 0; w < o.workers; ++w) e += epoch[w] / o.workers, l += loss[w] / o.workers;
      uint64_t updates = 0, in = 0, out = 0;
      for (auto p : server_pushes) updates += p;
      for (uint32_t w = 0; w < o.workers; ++w) in += pushed[w], out += pulled[w];
      double rate = t > 0.5 ? updates / o.servers / t : 0;  // per server: every piece counts once
      std::fprintf(stderr,
                   "\r[%s] epoch %5.2f/%u  loss %.3f  test acc %5.2f%%  %6.0f updates/s  staleness p50 %.0f max %llu"
                   "  pushed %s pulled %s  %5.1fs ",
                   r.label.c_str(), e, o.epochs, l, 100 * accuracy, rate, r.tau_p50,
                   static_cast<unsigned long long>(r.tau_max), human_bytes(static_cast<double>(in)).c_str(),
                   human_bytes(static_cast<double>(out)).c_str(), t);
      std::fflush(stderr);
    }
  }
  for (auto& c : workers)
    if (c.fd() >= 0) wait_exit(c);
  for (auto& c : servers) {
    while (!c.eof) {
      std::vector<ChildProcess*> one = {&c};
      pump(one, 200);
      while (auto line = next_line(c)) {
        std::istringstream in(*line);
        std::string kind;
        uint64_t pushes, tau_max, dropped;
        double p50;
        if (in >> kind >> pushes >> p50 >> tau_max >> dropped && kind == "stats") {
          r.tau_p50 = p50;
          r.tau_max = std::max(r.tau_max, tau_max);
        }
      }
    }
    wait_exit(c);
  }
  if (progress) std::fprintf(stderr, "\n");
  r.seconds = start ? std::chrono::duration<double>(Clock::now() - *start).count() : 0;
  r.final_accuracy = r.curve.empty() ? 0 : r.curve.back().accuracy;
  return r;
}

std::string json_of(const RunResult& r) {
  std::ostringstream j;
  j.precision(6);
  j << "{\"run\":\"" << r.label << "\",\"final_test_accuracy\":" << r.final_accuracy << ",\"seconds\":" << r.seconds
    << ",\"time_to_85_s\":";
  if (r.time_to_85)
    j << *r.time_to_85;
  else
    j << "null";
  j << ",\"updates\":" << r.updates << ",\"bytes_pushed\":" << r.pushed << ",\"bytes_pulled\":" << r.pulled
    << ",\"pulls\":" << r.pulls << ",\"pulls_skipped\":" << r.skipped << ",\"staleness_p50\":" << r.tau_p50
    << ",\"staleness_max\":" << r.tau_max << ",\"straggled_steps\":" << r.straggled << "}";
  return j.str();
}

void write_outputs(const std::string& dir, const std::vector<RunResult>& runs, bool json) {
  mkdir(dir.c_str(), 0755);
  std::ofstream csv(dir + "/metrics.csv");
  csv << "run,seconds,epoch,test_accuracy,test_loss,updates\n";
  for (const auto& r : runs)
    for (const auto& p : r.curve)
      csv << r.label << "," << p.seconds << "," << p.epoch << "," << p.accuracy << "," << p.loss << "," << p.updates
          << "\n";
  csv.close();
  std::ofstream summary(dir + "/summary.json");
  if (runs.size() == 1)
    summary << json_of(runs[0]) << "\n";
  else {
    summary << "[";
    for (size_t i = 0; i < runs.size(); ++i) summary << (i ? "," : "") << json_of(runs[i]);
    summary << "]\n";
  }
  summary.close();
  // Plot with gnuplot when it is there; the CSV is the result either way.
  std::string script = dir + "/accuracy.gp";
  std::ofstream gp(script);
  gp << "set terminal pngcairo size 900,560\nset output '" << dir << "/accuracy.png'\nset datafile separator ','\n"
     << "set key bottom right\nset grid\nset xlabel 'wall-clock seconds'\nset ylabel 'test accuracy'\nset yrange "
        "[0.5:0.95]\n"
     << "set title 'rdmaps-train: Fashion-MNIST MLP'\nplot ";
  for (size_t i = 0; i < runs.size(); ++i) {
    std::string file = dir + "/curve-" + std::to_string(i) + ".csv";
    std::ofstream c(file);
    for (const auto& p : runs[i].curve) c << p.seconds << "," << p.accuracy << "\n";
    gp << (i ? ", " : "") << "'" << file << "' using 1:2 with linespoints title '" << runs[i].label << "'";
  }
  gp << "\n";
  gp.close();
  std::string cmd = "gnuplot '" + script + "' 2>/dev/null";
  bool plotted = std::system("command -v gnuplot >/dev/null 2>&1") == 0 && std::system(cmd.c_str()) == 0;
  if (!json)
    std::printf("wrote %s/metrics.csv, %s/summary.json%s\n", dir.c_str(), dir.c_str(),
                plotted ? (", " + dir + "/accuracy.png").c_str() : " (no plot: apt-get install gnuplot-nox)");
}

void print_table(const std::vector<RunResult>& runs) {
  std::printf("%-18s %10s %12s %9s %12s %10s %10s\n", "run", "final acc", "time to 85%", "updates", "bytes moved",
              "staleness", "seconds");
  for (const auto& r : runs) {
    char t85[32];
    if (r.time_to_85)
      std::snprintf(t85, sizeof(t85), "%.1f s", *r.time_to_85);
    else
      std::snprintf(t85, sizeof(t85), "never");
    std::printf("%-18s %9.2f%% %12s %9llu %12s %10.0f %10.1f\n", r.label.c_str(), 100 * r.final_accuracy, t85,
                static_cast<unsigned long long>(r.updates),
                human_bytes(static_cast<double>(r.pushed + r.pulled)).c_str(), r.tau_p50, r.seconds);
  }
}

int run_driver(const Options& o) {
  load_dataset_dir(o.data);  // fail here, clearly, before starting any process
  std::vector<RunResult> runs;
  if (o.compare) {
    struct Variant {
      const char* label;
      uint32_t workers;
      const char* staleness;
      const char* dc;
    };
    const Variant variants[] = {
        {"sequential SGD", 1, "0", "off"},           {"BSP", o.workers, "0", "off"},
        {"SSP s=3", o.workers, "3", "off"},          {"ASGD", o.workers, "inf", "off"},
        {"DC-ASGD-c", o.workers, "inf", "constant"}, {"DC-ASGD-a", o.workers, "inf", "adaptive"}};
    for (const auto& v : variants) {
      Options run = o;
      run.label = v.label;
      run.workers = v.workers;
      run.staleness = v.staleness;
      run.dc = v.dc;
      if (run.straggler >= static_cast<int>(run.workers)) run.straggler = -1;
      runs.push_back(run_local(run, !o.json));
    }
  } else {
    Options run = o;
    if (run.label.empty())
      run.label = (o.staleness == "0"     ? "BSP"
                   : o.staleness == "inf" ? "async"
                                          : "SSP s=" + o.staleness) +
                  std::string(o.dc == "off"        ? ""
                              : o.dc == "constant" ? " DC-c"
                                                   : " DC-a");
    runs.push_back(run_local(run, !o.json));
  }
  if (o.json) std::printf("%s\n", runs.size() == 1 ? json_of(runs[0]).c_str() : "");
  if (o.json && runs.size() > 1) {
    std::printf("[");
    for (size_t i = 0; i < runs.size(); ++i) std::printf("%s%s", i ? "," : "", json_of(runs[i]).c_str());
    std::printf("]\n");
  }
  if (!o.json) print_table(runs);
  write_outputs(o.out, runs, o.json);
  for (const auto& r : runs)
    if (r.final_accuracy < o.expect_accuracy) {
      std::fprintf(stderr, "rdmaps-train: %s ended at %.4f test accuracy, below the expected %.4f\n", r.label.c_str(),
                   r.final_accuracy, o.expect_accuracy);
      return 3;
    }
  return 0;
}

}  // namespace
}  // namespace rdmaps::train

int main(int argc, char** argv) {
  using namespace rdmaps::train;
  try {
    Options o = parse(argc, argv);
    if (o.role == "server") return run_server_role(o);
    if (o.role == "worker") return run_worker_role(o);
    if (o.role != "driver") bad_flag("--role", "'" + o.role + "' is not server, worker or driver");
    return run_driver(o);
  } catch (const rdmaps::Error& e) {
    std::fprintf(stderr, "rdmaps-train: error (%s): %s\n", rdmaps::errc_name(e.code()), e.what());
    return 1;
  }
}
