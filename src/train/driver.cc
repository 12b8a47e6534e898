#include "src/train/driver.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "rdmaps/error.h"
#include "src/tools/child_process.h"
#include "src/train/evaluator.h"
#include "src/train/run_outputs.h"
#include "src/train/run_result.h"
#include "src/train/worker.h"
#include "transport/memory_limit.h"

namespace rdmaps::train {
namespace {

using Clock = std::chrono::steady_clock;

struct ChildProcess {
  tools::Child child;
  std::string buffer, name;
  bool eof = false;
  std::optional<Errc> failed;  // the kind of its own error, which it said before it exited ("failed KIND")
  int fd() const { return child.read_fd; }
};

ChildProcess spawn(const std::vector<std::string>& args, const std::string& name) {
  ChildProcess c;
  c.name = name;
  c.child = tools::spawn_self("rdmaps-train", args);
  return c;
}

std::optional<Errc> errc_named(const std::string& name) {
  for (int k = 0; k <= static_cast<int>(Errc::kRefusedForNow); ++k)
    if (name == errc_name(static_cast<Errc>(k))) return static_cast<Errc>(k);
  return std::nullopt;
}

// Next complete line already read from a child (see pump()), if any. The
// kind of a child's own error ("failed KIND", said before it exits) is
// taken here, wherever its lines are read: a worker's truncated data file
// ended the run as "error (peer-gone)".
std::optional<std::string> next_line(ChildProcess& c) {
  for (;;) {
    auto nl = c.buffer.find('\n');
    if (nl == std::string::npos) return std::nullopt;
    std::string line = c.buffer.substr(0, nl);
    c.buffer.erase(0, nl + 1);
    if (line.rfind("failed ", 0) != 0) return line;
    c.failed = errc_named(line.substr(7));
  }
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

// Reads one line of server `index` ("stats ..." or "histogram ...") into r.
void take_server_line(const std::string& line, size_t index, RunResult& r) {
  std::istringstream in(line);
  std::string kind;
  in >> kind;
  if (kind == "stats") {
    ServerFigures& f = r.servers.at(index);
    in >> f.applied >> f.tau_p50 >> f.tau_max >> f.dropped;
    // The progress line's: server 0's while the job runs (each server takes a piece of every step; the
    // line showed whichever server spoke last); the summary's comes from all the histograms (finish_servers).
    if (index == 0) r.tau_p50 = f.tau_p50;
    r.tau_max = std::max(r.tau_max, f.tau_max);
  } else if (kind == "histogram") {
    add_histogram(in, r.staleness);
  } else if (kind == "stopped") {
    in >> r.servers.at(index).stopped_by;
  } else if (kind == "resumed") {
    in >> r.servers.at(index).resumed;
  }
}

// "server 1 was stopped by signal 15 (Terminated)", or "" where no signal stopped it.
std::string stopped_text(const ChildProcess& s, const ServerFigures& f) {
  if (!f.stopped_by) return "";
  return s.name + " was stopped by signal " + std::to_string(f.stopped_by) + " (" + strsignal(f.stopped_by) + ")";
}

// Why `worker` failed (`how`): a server that died before it, if any did
// within a second (its workers then fail with "peer gone"), else the worker,
// with its own error's kind.
Error blame(std::vector<ChildProcess>& servers, RunResult& r, const ChildProcess& worker, const std::string& how) {
  std::vector<tools::Child*> children;
  std::vector<ChildProcess*> all;
  for (auto& s : servers) children.push_back(&s.child), all.push_back(&s);
  for (const auto until = Clock::now() + std::chrono::seconds(1);;) {
    std::string server_how;
    if (auto s = tools::first_failed(children, std::chrono::milliseconds(0), &server_how))
      return Error(servers[*s].failed.value_or(Errc::kPeerGone),
                   servers[*s].name + " " + server_how + ", and " + worker.name + " failed after it");
    // One stopped by a signal (SIGTERM) exits 0 after its final checkpoint,
    // and the worker was blamed: it says so at once, in a line read here.
    for (size_t i = 0; i < servers.size(); ++i)
      if (const std::string stopped = stopped_text(servers[i], r.servers[i]); !stopped.empty())
        return Error(Errc::kPeerGone, stopped + ", and " + worker.name + " failed after it");
    if (Clock::now() >= until)
      return Error(worker.failed.value_or(Errc::kPeerGone), worker.name + " failed: it " + how);
    pump(all, 50);
    for (size_t i = 0; i < servers.size(); ++i)
      while (auto line = next_line(servers[i])) take_server_line(*line, i, r);
  }
}

// Waits for a server at the run's end; one that fails (its final checkpoint
// could not be written) fails the run, as the trained model is not saved,
// once its figures are written (they were thrown away with it).
// A child that failed is a peer gone (its own error is above), not ours.
void finish_server(ChildProcess& c, size_t index, RunResult& r) {
  std::vector<ChildProcess*> one = {&c};
  while (!c.eof) {
    pump(one, 200);
    while (auto line = next_line(c)) take_server_line(*line, index, r);
  }
  std::string how;
  if (tools::wait_child(c.child, &how) != 0 && r.failure.empty()) {
    r.failure = c.name + " failed at the end of the run: it " + how;
    r.failure_kind = c.failed.value_or(Errc::kPeerGone);
  }
}

// The summary's figures from every server's last word: the p50 of all their
// pushes, and the steps applied. A server drops pieces, one per shard a push
// covers; the pieces of one step seeing the same staleness are dropped
// together, so the steps dropped are the pieces dropped over pieces per step.
uint64_t steps_dropped(uint64_t steps, const std::vector<ServerFigures>& servers) {
  uint64_t applied = 0, dropped = 0;
  for (const auto& f : servers) applied += f.applied, dropped += f.dropped;
  const double pieces = static_cast<double>(applied + dropped);
  return std::min(steps, pieces > 0 ? static_cast<uint64_t>(std::llround(steps * (dropped / pieces))) : 0);
}

// The summary's staleness and updates from every server's histogram and drops.
void add_up_servers(RunResult& r) {
  r.tau_p50 = quantile_text(r.staleness, 0.5);
  r.dropped = steps_dropped(r.steps, r.servers);
  r.updates = r.steps - r.dropped;
}

void finish_servers(std::vector<ChildProcess>& servers, RunResult& r) {
  for (size_t i = 0; i < servers.size(); ++i) finish_server(servers[i], i, r);
  add_up_servers(r);
}

// Ctrl-C or SIGTERM to the driver: the run so far is kept and written. It
// ended the driver at once, and the --compare variants that had finished
// went with it (their outputs, and the earlier run's, already removed).
std::atomic<int> g_interrupted{0};
static_assert(std::atomic<int>::is_always_lock_free);
void on_interrupt(int signal) { g_interrupted.store(signal); }

void take_interrupts() {
  struct sigaction sa = {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: the poll for the children's lines returns at once
  for (const int signal : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(signal, &sa, nullptr);
}

// The children of an interrupted run are stopped as a scheduler stops a job
// (SIGTERM: a server saves its final checkpoint and reports its figures), at
// most 10 s, then killed; `r` gets what they said meanwhile.
void stop_children(std::vector<ChildProcess>& servers, std::vector<ChildProcess>& workers, RunResult& r) {
  std::vector<ChildProcess*> all;
  // pid -1: reaped already (first_failed); kill(-1, ...) would signal every process of this user.
  const auto signal_child = [](const ChildProcess& c, int signal) {
    if (c.child.pid > 0) ::kill(c.child.pid, signal);
  };
  for (auto* group : {&workers, &servers})
    for (auto& c : *group)
      if (c.fd() >= 0) {
        signal_child(c, SIGTERM);
        all.push_back(&c);
      }
  for (const auto until = Clock::now() + std::chrono::seconds(10); Clock::now() < until;) {
    if (std::all_of(all.begin(), all.end(), [](const ChildProcess* c) { return c->eof; })) break;
    pump(all, 100);
    for (size_t i = 0; i < servers.size(); ++i)
      while (auto line = next_line(servers[i])) take_server_line(*line, i, r);
  }
  for (ChildProcess* c : all) {
    if (!c->eof) signal_child(*c, SIGKILL);
    tools::wait_child(c->child);
  }
}

// `training_started` runs once, at the first test snapshot, which comes
// after every worker loaded its data and passed the start barrier: the
// flags, the servers' checks (--gpu-shard, --checkpoint-dir) and the data
// (a damaged gzip stream, a label past 9: the workers' checks) all passed.
RunResult run_local(const Options& o, bool progress, const std::function<void()>& training_started) {
  RunResult r;
  r.label = o.label.empty() ? default_label(o) : o.label;
  r.servers.resize(o.servers);
  r.virtual_workers = o.virtual_workers;
  if (o.virtual_workers) r.delay = o.delay;
  std::vector<ChildProcess> servers, workers;
  std::optional<Clock::time_point> start;
  std::vector<uint64_t> stepped(o.workers, 0);
  // The run as it stood when Ctrl-C or SIGTERM reached the driver, its children stopped.
  auto interrupted = [&](int signal) {
    stop_children(servers, workers, r);
    r.interrupted_by = signal;
    r.failure = std::string("interrupted by signal ") + std::to_string(signal) + " (" + strsignal(signal) + ")";
    r.steps = 0;  // the workers' steps so far, the finished ones' included
    for (uint32_t w = 0; w < o.workers; ++w) r.steps += stepped[w];
    r.seconds = start ? std::chrono::duration<double>(Clock::now() - *start).count() : 0;
    add_up_servers(r);
    r.final_accuracy = r.curve.empty() ? 0 : r.curve.back().accuracy;
    return r;
  };
  std::string list;
  tools::share_secret_with_children(config_of(o));
  for (uint32_t i = 0; i < o.servers; ++i) {
    auto args = passthrough(o, true);
    args.insert(args.end(), {"--role", "server", "--index", std::to_string(i)});
    if (!o.metrics.empty()) args.insert(args.end(), {"--metrics", metrics_address_for(o, i)});
    servers.push_back(spawn(args, "server " + std::to_string(i)));
  }
  for (auto& s : servers) {
    std::vector<ChildProcess*> one = {&s};
    auto deadline = Clock::now() + std::chrono::seconds(30);
    std::optional<std::string> line;
    while (!(line = next_line(s)) && !s.eof && Clock::now() < deadline && !g_interrupted.load()) pump(one, 100);
    if (const int signal = g_interrupted.load()) return interrupted(signal);
    if (!line || line->rfind("port ", 0) != 0)
      throw Error(s.failed.value_or(Errc::kIo),
                  s.name + (s.eof ? " exited before it reported its port (its error is above)"
                                  : " did not report its port within 30 s (see its output above)"));
    list += (list.empty() ? "" : ",") + ("127.0.0.1:" + line->substr(5));
  }
  if (o.virtual_workers) {
    auto args = passthrough(o);
    args.insert(args.end(), {"--role", "virtual", "--virtual-workers", std::to_string(o.virtual_workers), "--delay",
                             o.delay, "--servers-list", list});
    if (o.straggler.any()) args.insert(args.end(), {"--straggler", o.straggler.to_string()});
    workers.push_back(spawn(args, "virtual workers"));
  } else {
    for (uint32_t w = 0; w < o.workers; ++w) {
      auto args = passthrough(o);
      args.insert(args.end(), {"--role", "worker", "--worker", std::to_string(w), "--servers-list", list});
      if (!o.metrics.empty()) args.insert(args.end(), {"--metrics", metrics_address_for(o, o.servers + w)});
      if (o.straggler.any()) args.insert(args.end(), {"--straggler", o.straggler.to_string()});
      workers.push_back(spawn(args, "worker " + std::to_string(w)));
    }
  }
  std::vector<ChildProcess*> all;
  for (auto& c : servers) all.push_back(&c);
  for (auto& c : workers) all.push_back(&c);

  if (progress)
    std::fprintf(
        stderr, "rdmaps-train [%s]: %u server(s), %u worker(s)%s, %s; %u epochs of batch %u, %s lr schedule, data %s\n",
        r.label.c_str(), o.servers, o.workers,
        o.virtual_workers ? (" in one process, schedule " + o.delay).c_str() : "", describe(config_of(o)).c_str(),
        o.epochs, o.batch, o.schedule.c_str(), o.data.c_str());
  // On stderr, like the progress line, but with --json too: stdout keeps the JSON alone.
  if (!o.metrics.empty()) {
    const uint32_t endpoints = o.servers + (o.virtual_workers ? 0 : o.workers);
    const std::string last = endpoints == 1 ? "" : " to http://" + metrics_address_for(o, endpoints - 1) + "/metrics";
    std::fprintf(stderr, "rdmaps-train: metrics at http://%s/metrics (server 0)%s%s\n",
                 metrics_address_for(o, 0).c_str(), last.c_str(),
                 o.virtual_workers ? " (servers only: virtual workers share one process)" : "");
  }
  std::vector<double> epoch(o.workers, 0), loss(o.workers, 0);
  std::vector<uint64_t> pushed(o.workers, 0), pulled(o.workers, 0);
  double accuracy = 0;
  auto last_print = Clock::now();
  // An error leaving this run ends the progress line first: it was printed
  // at the end of it, behind the carriage returns.
  struct EndLine {
    bool open = false;
    ~EndLine() {
      if (open) std::fputc('\n', stderr);
    }
  } line_open;
  // `ended`: the training's time, for the last line, which the summary repeats; else now.
  auto draw_progress = [&](std::optional<double> ended = std::nullopt) {
    line_open.open = true;
    const double t = ended ? *ended : std::chrono::duration<double>(Clock::now() - *start).count();
    double e = 0, l = 0;
    for (uint32_t w = 0; w < o.workers; ++w) e += epoch[w] / o.workers, l += loss[w] / o.workers;
    uint64_t steps = 0, in = 0, out = 0;
    // A worker's step is one update, as in the summary, whatever the pieces its push is cut into;
    // the steps the servers dropped so far are not (--staleness-policy drop: the line counted them).
    for (uint32_t w = 0; w < o.workers; ++w) steps += stepped[w], in += pushed[w], out += pulled[w];
    const uint64_t updates = steps - steps_dropped(steps, r.servers);
    // No rate from the first half second (noise), but at the end: a run that short showed 0 updates/s.
    double rate = t > 0.5 || (ended && t > 0) ? static_cast<double>(updates) / t : 0;
    std::fprintf(stderr,
                 "\r[%s] epoch %5.2f/%u  loss %.3f  test acc %5.2f%%  %6.0f updates/s  staleness p50 %s max %llu"
                 "  pushed %s pulled %s  %5.1fs ",
                 r.label.c_str(), e, o.epochs, l, 100 * accuracy, rate, r.tau_p50.c_str(),
                 static_cast<unsigned long long>(r.tau_max), transport::size_text(in, 2).c_str(),
                 transport::size_text(out, 2).c_str(), t);
    std::fflush(stderr);
  };
  size_t finished = 0, children_done = 0;
  while (children_done < workers.size()) {
    pump(all, 200);
    if (const int signal = g_interrupted.load()) return interrupted(signal);
    for (size_t i = 0; i < all.size(); ++i) {
      ChildProcess& c = *all[i];
      while (auto line = next_line(c)) {
        if (i < servers.size()) {
          take_server_line(*line, i, r);
          continue;
        }
        std::istringstream in(*line);
        std::string kind;
        uint32_t w = 0;
        in >> kind;
        if (kind == "schedule") {
          add_histogram(in, r.schedule_staleness);
          continue;
        }
        if (kind == "virtual-time") {
          uint64_t straggled = 0;
          in >> r.virtual_time >> straggled;
          r.straggled += straggled;
          continue;
        }
        if (!(in >> w) || w >= o.workers) continue;  // not a worker's report
        if (kind == "progress") {
          in >> stepped[w] >> epoch[w] >> loss[w] >> pushed[w] >> pulled[w];
        } else if (auto e = parse_eval_line(*line)) {
          // Dated when its snapshot was taken, not when the test pass ended (evaluator.h).
          const auto taken =
              Clock::now() - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(e->age_s));
          if (!start) {
            start = taken;  // the first snapshot is taken right after the start barrier
            training_started();
          }
          Point p{std::chrono::duration<double>(taken - *start).count(),
                  e->epoch,
                  e->accuracy,
                  e->loss,
                  e->step,
                  e->virtual_time};
          accuracy = p.accuracy;
          if (!r.time_to_85 && p.accuracy >= 0.85) r.time_to_85 = p.seconds;
          if (!r.virtual_time_to_85 && p.accuracy >= 0.85 && p.virtual_time >= 0) r.virtual_time_to_85 = p.virtual_time;
          r.curve.push_back(p);
        } else if (kind == "done") {
          uint64_t steps, bytes_in, bytes_out, pulls, skipped, straggled = 0, pieces = 0, reconnects = 0, lost = 0;
          double compute;
          in >> steps >> bytes_in >> bytes_out >> pulls >> skipped >> compute >> straggled >> pieces >> reconnects >>
              lost;
          r.reconnects += reconnects;
          r.pushes_lost += lost;
          r.steps += steps;
          // The final figures for the progress line's last redraw.
          stepped[w] = steps, epoch[w] = o.epochs, pushed[w] = bytes_in, pulled[w] = bytes_out;
          r.pushed += bytes_in;
          r.pulled += bytes_out;
          r.pulls += pulls;
          r.skipped += skipped;
          r.straggled += straggled;
          ++finished;
        }
      }
      if (c.eof && i >= servers.size() && c.fd() >= 0) {
        std::string how;
        if (tools::wait_child(c.child, &how) != 0) throw blame(servers, r, c, how);
        ++children_done;
      }
    }
    // A server that failed while workers still train fails the run now:
    // workers still connecting (a server killed before they reached it)
    // waited for it to listen for their whole timeout, and so did this.
    // After the round's lines: a worker's "done" comes before its server
    // can end (a final checkpoint that fails is said at the run's end).
    for (size_t i = 0; i < servers.size(); ++i) {
      ChildProcess& s = servers[i];
      std::string how;
      if (s.eof && finished < o.workers && tools::first_failed({&s.child}, std::chrono::milliseconds(0), &how))
        throw Error(s.failed.value_or(Errc::kPeerGone), s.name + " " + how + ", while " +
                                                            std::to_string(o.workers - finished) +
                                                            " of its workers had not finished (they were stopped)");
      if (const std::string stopped = stopped_text(s, r.servers[i]); !stopped.empty() && finished < o.workers)
        throw Error(Errc::kPeerGone, stopped + " while " + std::to_string(o.workers - finished) +
                                         " of its workers had not finished (it saved a final checkpoint where it "
                                         "had a --checkpoint-dir)");
    }
    if (progress && start && Clock::now() - last_print > std::chrono::milliseconds(250)) {
      last_print = Clock::now();
      draw_progress();
    }
  }
  if (finished != o.workers)
    throw Error(Errc::kPeerGone, std::to_string(finished) + " of " + std::to_string(o.workers) +
                                     " workers reported their end; the others' errors are above");
  // The training's time ends with the workers': the servers' final checkpoints and exits (below) are not in it.
  r.seconds = start ? std::chrono::duration<double>(Clock::now() - *start).count() : 0;
  finish_servers(servers, r);
  if (progress && start) draw_progress(r.seconds);  // once more with the final figures, which the summary repeats
  if (progress) std::fprintf(stderr, "\n");
  line_open.open = false;
  r.final_accuracy = r.curve.empty() ? 0 : r.curve.back().accuracy;
  return r;
}

// Each worker process loads the whole dataset as floats (220 MB for
// Fashion-MNIST): 200 of them need 44 GB, and were all started on a 24 GB
// machine, to run out of memory mid-run.
void check_worker_processes_fit(const Options& o, uint64_t dataset_bytes) {
  if (o.virtual_workers) return;  // one process, one copy
  const uint64_t need = uint64_t{o.workers} * dataset_bytes;
  const transport::AvailableMemory available = transport::available_memory();
  if (available.bytes == 0 || need <= available.bytes) return;
  bad_flag("--workers", std::to_string(o.workers) + " worker processes each load the dataset (" +
                            transport::size_text(dataset_bytes) + " as floats): " + transport::size_text(need) +
                            ", but " + transport::size_text(available.bytes) + " is available (" + available.bound +
                            "): fewer --workers, or --virtual-workers (one process, one copy of the data)");
}

// As a worker holds it: floats and a byte a label.
uint64_t bytes_of(const Dataset& d) { return d.count * (d.pixels() * sizeof(float) + 1); }

}  // namespace

int run_driver(const Options& o) {
  size_t train_n = 0;
  {
    // Fail here, clearly, before any process starts: missing files, wrong
    // formats and shapes, limits past the data. The headers suffice: a
    // worker checks the rest (a damaged gzip stream, a label past 9) as it
    // loads the data, and reading it all here doubled a small run's start.
    const TrainTest data = check_dataset_dir(o.data);
    train_n = examples_used("--train-limit", o.train_limit, data.train);
    examples_used("--test-limit", o.test_limit, data.test);
    check_worker_processes_fit(o, bytes_of(data.train) + bytes_of(data.test));
  }
  // Every worker gets a batch, checked before any process starts: each
  // worker said so once it ran, and --compare's sequential run was thrown away.
  const uint32_t workers = o.virtual_workers ? o.virtual_workers : o.workers;
  if (train_n / workers < o.batch)
    bad_flag(train_n < o.batch   ? "--batch"  // even one worker would get less than a batch
             : o.virtual_workers ? "--virtual-workers"
                                 : "--workers",
             std::to_string(workers) + " workers of " + std::to_string(train_n) + " training examples get " +
                 std::to_string(train_n / workers) + " each, less than one batch of " + std::to_string(o.batch) +
                 ": fewer workers, a smaller --batch, or a larger --train-limit");
  // So are the tests an epoch, against the run with the most workers (the
  // fewest steps): --compare's BSP run refused them after the sequential
  // one had trained, and that run was lost with it.
  if (const size_t steps = train_n / workers / o.batch; o.evals_per_epoch_given && o.evals_per_epoch > steps)
    bad_flag("--evals-per-epoch", std::to_string(o.evals_per_epoch) + ": " +
                                      (workers == 1 ? std::string("the worker takes ")
                                                    : "with " + std::to_string(workers) + " workers each takes ") +
                                      std::to_string(steps) + " steps an epoch (" + std::to_string(train_n / workers) +
                                      " training examples in batches of " + std::to_string(o.batch) +
                                      ") and tests after a step: give at most " + std::to_string(steps));
  check_writable(o.out);  // and here, not after the training
  // An earlier run's outputs go once this one trains: a bad flag, a
  // server's refusal (--gpu-shard without a GPU) or a worker's (a label
  // past 9) deleted them, and wrote nothing in their place.
  bool cleared = false;
  const auto clear_once = [&] {
    if (!std::exchange(cleared, true)) clear_earlier_outputs(o.out);
  };
  std::vector<RunResult> runs;
  take_interrupts();
  if (o.compare) {
    struct Variant {
      const char* label;
      uint32_t workers;
      const char* staleness;
      const char* dc;
    };
    std::vector<Variant> variants = {
        {"sequential SGD", 1, "0", "off"},           {"BSP", o.workers, "0", "off"},
        {"SSP s=3", o.workers, "3", "off"},          {"ASGD", o.workers, "inf", "off"},
        {"DC-ASGD-c", o.workers, "inf", "constant"}, {"DC-ASGD-a", o.workers, "inf", "adaptive"}};
    for (const auto& v : variants) {
      Options run = o;
      run.label = v.label;
      run.workers = v.workers;
      run.staleness = v.staleness;
      run.dc = v.dc;
      if (run.virtual_workers) run.virtual_workers = v.workers;
      if (run.straggler.worker >= static_cast<int>(run.workers)) run.straggler.worker = -1;
      // Sequential SGD is the reference without parallel workers: its one
      // worker slowed (0:F, or random:F at chance 1/1) made every step F times
      // longer, while 1:F left it alone.
      if (v.workers == 1) run.straggler = Straggler{};
      try {
        runs.push_back(run_local(run, !o.json, clear_once));
        if (runs.back().interrupted_by) break;
      } catch (const Error&) {
        // The variants that finished are written, then the run fails: they
        // were all thrown away with the one that failed.
        if (!runs.empty()) {
          std::fprintf(stderr, "rdmaps-train: %s failed; writing the %zu variant(s) that finished\n", v.label,
                       runs.size());
          if (o.json) std::printf("%s\n", json_of(runs, o.compare).c_str());
          if (!o.json) print_table(runs);
          write_outputs(o.out, runs, o.json, o.compare);
        }
        throw;
      }
    }
  } else {
    runs.push_back(run_local(o, !o.json, clear_once));
  }
  if (o.json) std::printf("%s\n", json_of(runs, o.compare).c_str());
  if (!o.json) print_table(runs);
  clear_once();  // an interrupt before the training started
  write_outputs(o.out, runs, o.json, o.compare);
  if (const int signal = runs.back().interrupted_by) {
    std::fprintf(
        stderr, "rdmaps-train: %s %s; wrote it as it stood%s\n", runs.back().label.c_str(), runs.back().failure.c_str(),
        runs.size() > 1 ? (", with the " + std::to_string(runs.size() - 1) + " variant(s) before it").c_str() : "");
    return 128 + signal;
  }
  for (const auto& r : runs)
    if (!r.failure.empty()) throw Error(r.failure_kind, r.failure);
  for (const auto& r : runs)
    if (r.final_accuracy < o.expect_accuracy) {
      std::fprintf(stderr, "rdmaps-train: %s ended at %.4f test accuracy, below the expected %.4f\n", r.label.c_str(),
                   r.final_accuracy, o.expect_accuracy);
      return 3;
    }
  return 0;
}

}  // namespace rdmaps::train
