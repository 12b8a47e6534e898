#include "bench/perf_ps.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench/apply_bound.h"
#include "bench/gpu_shard_bound.h"
#include "bench/perf_gpu.h"
#include "bench/perf_options.h"
#include "bench/perf_report.h"
#include "rdmaps/client.h"
#include "rdmaps/error.h"
#include "rdmaps/server.h"
#include "src/api/config_flags.h"
#include "src/ps/shard_store.h"
#include "src/ps/update_rules.h"
#include "src/ps/write_back.h"
#include "src/tools/child_process.h"

namespace rdmaps::bench {

using tools::Child;
using tools::read_all;
using tools::read_report;
using tools::report;
using tools::spawn_self;
using tools::wait_child;
namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  Config config;  // the parameter-server flags rdmaps-perf ps takes (add_config_flags)
  std::vector<CLI::Option*> config_options;
  std::string role = "driver", servers_list, values = "normal", pull_memory = "registered";
  uint32_t workers = 1, servers = 1, index = 0, worker = 0;
  uint64_t floats = 1u << 24, iters = 0;  // iters 0: as many as ~4 GiB of pushes, 3 to 50
  uint32_t tensors = 1;                   // the model cut into this many tensors, as a framework's layers
  int report_fd = -1;
  bool json = false, gpu_shard = false;
  bool bound = true;  // off: no transport probes or memory pass (seconds a run), no ratio
};

// Seconds one thread takes to copy `floats` floats that are not in cache (best of three).
double copy_seconds(uint64_t floats) {
  std::vector<float> a(floats, 1.0f), b(floats, 2.0f);
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = Clock::now();
    std::memcpy(b.data(), a.data(), floats * sizeof(float));
    asm volatile("" : : "r"(b.data()) : "memory");  // the copy is kept and timed, whatever the optimizer sees
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    std::swap(a, b);
  }
  return best;
}

int run_server(const Flags& f) {
  ServerOptions o;
  o.gpu_shard = f.gpu_shard;
  o.listen = "127.0.0.1:0";
  o.index = f.index;
  o.servers = f.servers;
  o.workers = f.workers;
  o.config = f.config;
  Server server(o);
  int port = std::stoi(server.address().substr(server.address().rfind(':') + 1));
  int fd = f.report_fd;
  report(fd, &port, sizeof(port));
  close(fd);
  server.run();
  return 0;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

int run_worker(const Flags& f) {
  ClientOptions o;
  o.servers = split_list(f.servers_list);
  o.worker = f.worker;
  o.config = f.config;
  const uint64_t floats = f.floats;
  const uint64_t iters = f.iters ? f.iters : 5;
  std::vector<float> w(floats, 0.0f), g(floats, 1e-3f);  // before client: w may be registered with it
  Client client(o);
  // Tensor k: floats [k * floats / tensors, (k + 1) * floats / tensors).
  std::vector<std::string> names;
  std::vector<uint64_t> begin;
  for (uint32_t k = 0; k <= f.tensors; ++k) begin.push_back(floats * k / f.tensors);
  for (uint32_t k = 0; k < f.tensors; ++k) {
    names.push_back("w" + std::to_string(k));
    client.declare(names[k], begin[k + 1] - begin[k]);
  }
  // Before connect(): a put path's lanes are given the memory they may put pulls into.
  if (f.pull_memory == "registered") client.register_memory(w);
  client.connect();
  if (f.values == "tiny")  // 1e-20 .. 1e-40: squares, steps and mean squares go subnormal
    for (uint64_t i = 0; i < floats; ++i)
      g[i] = (i & 1 ? -1.0f : 1.0f) * std::pow(10.0f, -20.0f - 20.0f * static_cast<float>(i % 1024) / 1024.0f);
  const auto tensor = [&](std::vector<float>& v, uint32_t k) {
    return std::span<float>(v.data() + begin[k], begin[k + 1] - begin[k]);
  };
  std::vector<PullTarget> targets;  // the whole model in one batched pull
  for (uint32_t k = 0; k < f.tensors; ++k) targets.push_back({names[k], tensor(w, k)});
  if (o.worker == 0)
    for (uint32_t k = 0; k < f.tensors; ++k) client.init(names[k], tensor(w, k));
  client.pull(targets);  // sets this worker's backup (DC-ASGD's w_bak)
  std::vector<double> total, push, pull;
  for (uint64_t i = 0; i < iters + 1; ++i) {
    auto t0 = Clock::now();
    for (uint32_t k = 0; k < f.tensors; ++k) client.push(names[k], tensor(g, k));
    auto t1 = Clock::now();
    client.clock();
    auto t2 = Clock::now();
    client.pull(targets);
    auto t3 = Clock::now();
    if (i == 0) continue;  // warm-up
    push.push_back(std::chrono::duration<double>(t1 - t0).count());
    pull.push_back(std::chrono::duration<double>(t3 - t2).count());
    total.push_back(std::chrono::duration<double>(t3 - t0).count());
  }
  std::ostringstream out;
  out.precision(9);
  for (size_t i = 0; i < total.size(); ++i) out << total[i] << " " << push[i] << " " << pull[i] << "\n";
  const ClientStats stats = client.stats();
  std::string text = out.str() + "path " + stats.push_paths.at(0) + "\n" + "in_place " +
                     std::to_string(stats.pull_bytes_in_place) + " " + std::to_string(stats.pull_bytes) + "\n";
  int fd = f.report_fd;
  report(fd, text.data(), text.size());
  close(fd);
  return 0;
}

// One `rdmaps-perf transport` run: `size`-byte messages walking `span` bytes
// of source and `target_span` bytes of target; GB/s.
// `streams` probes at once (one per worker: workers move their pushes and
// pulls in parallel where the transport is the CPUs' copies, and share it
// where it is one link); their rates summed, each run long enough (`iters`
// messages, 0: the probe's own) that they overlap for most of it. Where
// they overlap only in part the sum overstates what they move together,
// which makes the bound smaller and the ratio worse, never better.
double probe_transport_GBps(uint32_t streams, uint64_t iters, const std::string& transport, const std::string& op,
                            uint64_t size, uint64_t span, uint64_t target_span,
                            const std::string& target_memory = "allocated") {
  std::vector<std::string> args = {"transport",
                                   "--transport",
                                   transport,
                                   "--op",
                                   op,
                                   "--sizes",
                                   std::to_string(size),
                                   "--span",
                                   std::to_string(span),
                                   "--target-span",
                                   std::to_string(target_span),
                                   "--target-memory",
                                   target_memory,
                                   "--lat-iters",
                                   "0",
                                   "--json"};
  if (iters) args.insert(args.end(), {"--iters", std::to_string(iters)});
  std::vector<Child> probes;
  for (uint32_t i = 0; i < streams; ++i) probes.push_back(spawn_self("rdmaps-perf", args));
  double sum = 0;
  std::string failure;  // the first; every probe is reaped before it is thrown
  for (Child& probe : probes) {
    std::string out = read_all(probe);
    // A probe that failed (or moved wrong bytes) is no reference for a bound.
    if (std::string how; wait_child(probe, &how) != 0) {
      if (failure.empty())
        failure = "the transport probe (" + op + " of " + std::to_string(size) + "-byte messages) " + how + ": " + out;
      continue;
    }
    const auto row = nlohmann::json::parse(out, nullptr, false);
    if (row.is_discarded() || !row.contains("bw_MBps") || !row["bw_MBps"].is_number()) {
      if (failure.empty()) failure = "transport probe printed no bandwidth: " + out;
      continue;
    }
    sum += row["bw_MBps"].get<double>() / 1e3;
  }
  if (!failure.empty()) throw Error(Errc::kInternal, failure);
  return sum;
}

// One probe about a second long (what one worker's transfers compare
// with), and `workers` at once, each as long: the rate all workers move
// together, steady (the bound's). A short probe, a few tens of ms, ran colder
// than the workload: one worker's wire term was 30 % longer than its
// second-long run gives, and push_vs_transport 15-25 % too good. The short
// one only sizes the long ones.
struct ProbeRates {
  double one, all;
};
ProbeRates probe_workers_GBps(uint32_t workers, const std::string& transport, const std::string& op, uint64_t size,
                              uint64_t span, uint64_t target_span, const std::string& target_memory = "allocated") {
  const double cold = probe_transport_GBps(1, 0, transport, op, size, span, target_span, target_memory);
  // About a second, at least 8 operations (a put write-back of a 64 M-float
  // share is one 256 MiB put: 256 of them took a minute).
  const auto iters =
      std::clamp<uint64_t>(static_cast<uint64_t>(cold * 1e9 / static_cast<double>(size)), 8, uint64_t{1} << 32);
  const double all = probe_transport_GBps(workers, iters, transport, op, size, span, target_span, target_memory);
  if (workers == 1) return {all, all};
  return {probe_transport_GBps(1, iters, transport, op, size, span, target_span, target_memory), all};
}

// Who failed, when worker `worker` did (`how`): a server that died first,
// whose workers then fail with peer-gone, or else the worker. It used to say
// "a worker process failed" when the server had crashed.
std::string blame(std::vector<Child>& servers, uint32_t worker, const std::string& how) {
  std::vector<Child*> children;
  for (auto& s : servers) children.push_back(&s);
  std::string server_how;
  if (auto s = tools::first_failed(children, std::chrono::seconds(1), &server_how))
    return "server " + std::to_string(*s) + " " + server_how + ", and worker " + std::to_string(worker) +
           " failed after it";
  return "worker " + std::to_string(worker) + " " + how;
}

int run_driver(const Flags& f) {
  const Config& config = f.config;
  const std::string& transport = config.transport;
  const uint32_t workers = f.workers, servers = f.servers;
  const uint64_t floats = f.floats;
  const std::string& values = f.values;
  const uint64_t iters = f.iters ? f.iters : std::clamp<uint64_t>((4ull << 30) / (floats * 4), 3, 50);
  const bool gpu_shard = f.gpu_shard;
  if (gpu_shard && no_gpu(cuda::probe_gpus(), "rdmaps-perf ps", "--gpu-shard"))
    return kSkipExit;  // as `rdmaps-perf gpu` skips

  const uint64_t per_server_floats = (floats + servers - 1) / servers;
  const uint64_t server_shards = (per_server_floats + config.shard_floats - 1) / config.shard_floats;
  const uint32_t threads = server_threads_for(config, server_shards, gpu_shard);
  const uint64_t shard_bytes = config.shard_floats * 4ull, share_bytes = per_server_floats * 4;
  const uint64_t inbox_bytes = std::min(share_bytes, uint64_t{threads} * config.inbox_slots * shard_bytes);

  std::vector<std::string> common = cli::given(f.config_options);
  common.insert(common.end(), {"--workers", std::to_string(workers), "--servers", std::to_string(servers), "--floats",
                               std::to_string(floats), "--iters", std::to_string(iters), "--values", values,
                               "--tensors", std::to_string(f.tensors), "--pull-memory", f.pull_memory});
  if (gpu_shard) common.push_back("--gpu-shard");
  std::vector<Child> server_children;
  std::string list;
  tools::share_secret_with_children(config);
  for (uint32_t s = 0; s < servers; ++s) {
    std::vector<std::string> args = {"ps", "--role", "server", "--index", std::to_string(s)};
    args.insert(args.end(), common.begin(), common.end());
    server_children.push_back(spawn_self("rdmaps-perf", args));
    int port = 0;
    read_report(server_children.back(), &port, sizeof(port), "server");
    list += (list.empty() ? "" : ",") + ("127.0.0.1:" + std::to_string(port));
  }
  std::vector<Child> worker_children;
  for (uint32_t w = 0; w < workers; ++w) {
    std::vector<std::string> args = {"ps", "--role", "worker", "--worker", std::to_string(w), "--servers-list", list};
    args.insert(args.end(), common.begin(), common.end());
    worker_children.push_back(spawn_self("rdmaps-perf", args));
  }
  std::vector<double> total, push, pull;
  std::string path;
  double in_place = 0, pulled = 0;  // bytes, all workers
  const std::vector<std::string> reports = tools::read_all_or_fail(
      worker_children, [&](size_t w, const std::string& how) { return blame(server_children, w, how); });
  for (uint32_t w = 0; w < workers; ++w) {
    Child& child = worker_children[w];
    std::istringstream in(reports[w]);
    for (std::string a, b; in >> a >> b;) {
      if (a == "path") {
        path = b;
        continue;
      }
      if (a == "in_place") {
        std::string all;
        in >> all;
        in_place += std::stod(b);
        pulled += std::stod(all);
        continue;
      }
      std::string c;
      in >> c;
      total.push_back(std::stod(a));
      push.push_back(std::stod(b));
      pull.push_back(std::stod(c));
    }
    if (std::string how; wait_child(child, &how) != 0) throw Error(Errc::kInternal, blame(server_children, w, how));
  }
  // A server that failed after its workers reported (its leave, its final
  // checkpoint, a crash as it shut down) fails the run: its figures are not given.
  for (size_t s = 0; s < server_children.size(); ++s)
    if (std::string how; wait_child(server_children[s], &how) != 0)
      throw Error(Errc::kInternal,
                  "server " + std::to_string(s) + " " + how + " (after its workers reported: no figures)");
  if (total.empty()) throw Error(Errc::kInternal, "no worker reported timings");

  // Same-run reference for the bound's wire term: the transport on the path
  // the pushes took (as the workers report it: with --transport auto the
  // server picks it, and a put probe where UCX emulated RMA made the ratio
  // 5x too good), at the messages they were cut into, moving a server's
  // share of the model from memory as the servers do: a push into a
  // worker's inbox slots on each thread, a write-back into memory of the
  // model's size.
  const std::string op = path == "am" || path == "put" ? path : config.push_path == PushPath::kAm ? "am" : "put";
  const uint64_t message_bytes = std::min(shard_bytes, share_bytes);
  // A bf16 push carries 2 bytes a float: its probe's messages, the wire term
  // and push_vs_transport count those (counted at 4, the push looked twice
  // as fast against the transport as it was).
  const uint32_t push_bytes_per_float = config.wire == WireFormat::kBf16 ? 2 : 4;
  const uint64_t push_share = share_bytes / 4 * push_bytes_per_float;
  // With --bound off none of the reference is measured: its fields are null.
  const bool bounded = f.bound;
  const ProbeRates push_net = bounded
                                  ? probe_workers_GBps(workers, transport, op, message_bytes / 4 * push_bytes_per_float,
                                                       push_share, inbox_bytes)
                                  : ProbeRates{0, 0};
  // Pulls the servers put into registered memory are measured into such memory
  // (UCX 1.13 emulates puts there over shared memory; natively, as on verbs,
  // the two memories take the same puts).
  const bool landing = op == "put" && f.pull_memory == "registered" && config.put_landing == PutLanding::kOn;
  // A write-back goes in the messages a lane cuts it into: whole shards of
  // about kWriteBackChunkBytes on the am path, one put of the lane's range
  // on the put path (probed at a shard's size, the put term was too long
  // by what larger messages gain).
  const uint64_t pieces = (share_bytes + shard_bytes - 1) / shard_bytes;
  const uint64_t pull_message =
      std::min(share_bytes, op == "am" ? std::max<uint64_t>(1, ps::kWriteBackChunkBytes / shard_bytes) * shard_bytes
                                       : (pieces + threads - 1) / threads * shard_bytes);
  const ProbeRates pull_net = bounded ? probe_workers_GBps(workers, transport, op, pull_message, share_bytes,
                                                           share_bytes, landing ? "registered" : "allocated")
                                      : ProbeRates{0, 0};
  // Where the bound leaves out a cost that counts, no ratio is given: it
  // has no latency term (below one shard a server's share is one small
  // message a round trip, the ratio was 750 at 1000 floats), and the GPU
  // shard's none for bf16.
  // Nor where its terms describe another run than the one timed: a model
  // of several tensors goes in pieces smaller than the probe's messages, and
  // several servers on this host share its cores, which the bound gives to
  // one server's threads (and the wire to one server's streams).
  // These two make the probe another transfer than the pushes and pulls:
  // push_vs_transport and pull_vs_transport are refused with the ratio.
  const std::string unlike_probe =
      f.tensors > 1
          ? "the model is " + std::to_string(f.tensors) + " tensors, pushed in pieces smaller than the probe's " +
                std::to_string(message_bytes) + "-byte messages"
      : servers > 1
          ? std::to_string(servers) + " servers share this host's cores: the bound is one server's threads and streams"
          : "";
  const std::string unbounded =
      !bounded                    ? "--bound off: no bound was measured"
      : share_bytes < shard_bytes ? "a server's share is less than one shard: the bound has no latency term"
      : !unlike_probe.empty()     ? unlike_probe
      : gpu_shard && config.wire == WireFormat::kBf16 ? "the GPU shard's bound has no term for bf16 pushes"
                                                      : "";

  auto vs_probe = [&](double r) { return bounded && unlike_probe.empty() ? nlohmann::ordered_json(r) : nullptr; };
  auto measured = [&](double v) { return bounded ? nlohmann::ordered_json(v) : nullptr; };
  Percentiles iter = Percentiles::of(total), push_p = Percentiles::of(push), pull_p = Percentiles::of(pull);
  // Bound for one iteration: every worker's push and pull cross the transport
  // (at the rate the workers' probes moved together),
  // and each server's threads apply their share of every worker's push and,
  // where the write-back goes through a copy (a DC rule's backup, or active
  // messages), copy it into that worker's copy: that pass is measured now,
  // with the threads the servers run (servers run in parallel; so do
  // transfers to different servers).
  double wire = bounded ? workers * (push_share / (push_net.all * 1e9) + share_bytes / (pull_net.all * 1e9)) : 0;
  // With the parameters the servers run (a default-constructed UpdateParams
  // timed DC-ASGD-a's GPU kernel without its bound and bias correction).
  const math::UpdateParams rule = ps::update_params(config);
  double memory = !bounded    ? 0
                  : gpu_shard ? gpu_shard_bound_seconds(rule, per_server_floats, workers)
                              : apply_bound_seconds(rule, per_server_floats, config.shard_floats, workers, threads,
                                                    ps::write_back_copies(config.rule, path == "am"),
                                                    config.wire == WireFormat::kBf16);
  // A bf16 push is encoded by its worker first (the workers in parallel, each its whole gradient).
  const double encode = bounded && config.wire == WireFormat::kBf16 ? encode_bf16_seconds(floats) : 0;
  // A pull ends with the worker copying the parameters out of its receive
  // region into the caller's buffer (workers do that in parallel), all but
  // what landed in place.
  const double copied = pulled > 0 ? 1 - in_place / pulled : 1;
  double copy_out = bounded ? copied * copy_seconds(floats) : 0;
  double bound = wire + encode + memory + copy_out;
  double push_GBps = static_cast<double>(floats * push_bytes_per_float) / push_p.p50 / 1e9;
  // A pull as the worker sees it: request, the servers' write-back, and its
  // copy out of the receive region (one direction of the transport).
  double pull_GBps = floats * 4.0 / pull_p.p50 / 1e9;
  double intake_GBps = static_cast<double>(workers * floats * push_bytes_per_float) / iter.p50 / 1e9;

  const nlohmann::ordered_json j = {{"bench", "ps"},
                                    {"transport", transport},
                                    {"push_path", path},
                                    {"rule", rule_name(config.rule)},
                                    {"values", values},
                                    {"pull_memory", f.pull_memory},
                                    {"gpu_shard", gpu_shard},
                                    {"server_threads", threads},
                                    {"workers", workers},
                                    {"servers", servers},
                                    {"floats", floats},
                                    {"tensors", f.tensors},
                                    {"shard_floats", config.shard_floats},
                                    {"iters", iters},
                                    {"samples", total.size()},  // iterations of all workers: the percentiles' base
                                    {"iter_p50_s", iter.p50},
                                    {"iter_max_s", iter.max},
                                    {"push_p50_s", push_p.p50},
                                    {"push_GBps", push_GBps},
                                    {"pull_p50_s", pull_p.p50},
                                    {"pull_in_place", pulled > 0 ? in_place / pulled : 0.0},
                                    {"pull_GBps", pull_GBps},
                                    {"intake_GBps", intake_GBps},
                                    {"transport_push_GBps", measured(push_net.one)},
                                    {"transport_pull_GBps", measured(pull_net.one)},
                                    // the rates of one probe per worker at once: the bound's wire term
                                    {"transport_push_all_GBps", measured(push_net.all)},
                                    {"transport_pull_all_GBps", measured(pull_net.all)},
                                    {"bound_wire_s", measured(wire)},
                                    {"bound_memory_s", measured(memory)},
                                    {"bound_copy_out_s", measured(copy_out)},
                                    {"bound_encode_s", measured(encode)},
                                    {"bound_s", measured(bound)},
                                    {"wire", config.wire == WireFormat::kBf16 ? "bf16" : "f32"},
                                    {"probe_op", op},
                                    {"ratio", unbounded.empty() ? nlohmann::ordered_json(iter.p50 / bound) : nullptr},
                                    {"no_ratio_because", unbounded},
                                    {"push_vs_transport", vs_probe(push_GBps / push_net.one)},
                                    {"pull_vs_transport", vs_probe(pull_GBps / pull_net.one)}};
  if (f.json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    const std::string memory_work =
        gpu_shard ? "every worker's gradient to the GPU, update, parameters back to host memory and backup copy"
                  : "every worker's update and backup copy by " + std::to_string(threads) +
                        " thread(s), each on its own part";
    std::printf(
        "# rdmaps-perf ps: %u worker(s), %u server(s) of %u thread(s), %llu floats, rule %s, transport %s, push "
        "path %s, %s pushes%s\n",
        workers, servers, threads, static_cast<unsigned long long>(floats), rule_name(config.rule), transport.c_str(),
        path.c_str(), config.wire == WireFormat::kBf16 ? "bf16" : "f32", gpu_shard ? ", range on the GPU" : "");
    if (bounded)
      std::printf(
          "# bound = push bytes / transport %.2f GB/s + pull bytes / transport %.2f GB/s (%s at %llu-byte pieces "
          "from a server's share of the model, into %llu inbox bytes and into the share's size, %u probe(s) at "
          "once; same run)\n"
          "#       + %s (same run)\n"
          "#       + a worker's copy of the parameters out of its receive region (one thread, same run)\n"
          "#       + with bf16 pushes, a worker's encoding of its gradient (one thread, same run)\n",
          push_net.all, pull_net.all, op.c_str(), static_cast<unsigned long long>(message_bytes),
          static_cast<unsigned long long>(inbox_bytes), workers, memory_work.c_str());
    std::printf("%8s %8s %12s %12s %12s %12s %12s %12s %8s\n", "iters", "samples", "iter_p50_s", "push_GB/s",
                "intake_GB/s", "bound_s", "wire_s", "memory_s", "ratio");
    char ratio[32] = "n/a";
    if (unbounded.empty()) std::snprintf(ratio, sizeof(ratio), "%.2f", iter.p50 / bound);
    // With --bound off, "-" where the bound's terms go (not a bound of 0 s).
    auto term = [&](double seconds) {
      char text[32] = "-";
      if (bounded) std::snprintf(text, sizeof(text), "%.4f", seconds);
      return std::string(text);
    };
    std::printf("%8llu %8zu %12.4f %12.2f %12.2f %12s %12s %12s %8s\n", static_cast<unsigned long long>(iters),
                total.size(), iter.p50, push_GBps, intake_GBps, term(bound).c_str(), term(wire).c_str(),
                term(memory).c_str(), ratio);
    if (!unbounded.empty()) std::printf("# no ratio: %s\n", unbounded.c_str());
  }
  return 0;
}

}  // namespace

int perf_ps_main(int argc, char** argv, int first) {
  Flags f;
  f.config.transport = "shm";
  f.config.rule = UpdateRule::kDcAsgdConstant;
  f.config.staleness = 0;
  f.config.checkpoint_every_ms = 1000;  // with --checkpoint-dir: what checkpointing while serving costs
  CLI::App app("Push + apply + write-back through real server and worker processes on this host.", "rdmaps-perf ps");
  cli::set_defaults(app);
  app.add_option("--workers", f.workers, "worker processes")->transform(cli::count(1, 256))->capture_default_str();
  app.add_option("--servers", f.servers, "server processes")->transform(cli::count(1, 256))->capture_default_str();
  add_size(app, "--floats", f.floats, 1, 1ull << 31, "model size in floats (16M)");
  add_size(app, "--iters", f.iters, 1, 1u << 20, "timed iterations (default: ~4 GiB of pushes, 3 to 50)");
  app.add_option("--values", f.values, "gradients of 1e-3, or of 1e-20..1e-40 (subnormal squares)")
      ->check(cli::one_of({"normal", "tiny"}))
      ->capture_default_str();
  app.add_option("--tensors", f.tensors, "the model as this many tensors, pushed one by one, pulled in one batch")
      ->transform(cli::count(1, 1u << 20))
      ->capture_default_str();
  app.add_option("--pull-memory", f.pull_memory,
                 "pull into memory given to Client::register_memory() (lands in place over tcp, and by put where "
                 "--put-landing allows) or not (copied out)")
      ->check(cli::one_of({"registered", "plain"}))
      ->capture_default_str();
  cli::add_switch(app, "--gpu-shard", f.gpu_shard, "the servers keep their range on the GPU");
  cli::add_switch(app, "--json", f.json, "one JSON object");
  cli::add_switch(app, "--bound", f.bound,
                  "measure the bound (transport probes, a memory pass: a few seconds a run) and the ratio to it");
  // The roles of the processes the driver starts.
  const std::string internal = "";
  app.add_option("--role", f.role)->check(cli::one_of({"driver", "server", "worker"}))->group(internal);
  app.add_option("--index", f.index)->transform(cli::count(0, 255))->group(internal);
  app.add_option("--worker", f.worker)->transform(cli::count(0, 255))->group(internal);
  app.add_option("--servers-list", f.servers_list)->group(internal);
  app.add_option("--report-fd", f.report_fd)->transform(cli::count(0, INT32_MAX))->group(internal);
  f.config_options =
      add_config_flags(app, f.config,
                       {.only = {"transport", "rule", "push-path", "put-landing", "wire", "shard-floats", "inbox-slots",
                                 "server-threads", "checkpoint-dir", "checkpoint-every", "secret-file"},
                        .except = {}});
  // A benchmark's checkpoints are its own: RDMAPS_CHECKPOINT_DIR exported
  // for a training job put one into that job's directory, which its next
  // --resume then refused to start from.
  for (const char* flag : {"--checkpoint-dir", "--checkpoint-every"}) app.get_option(flag)->envname("");
  if (!parse(app, argc, argv, first)) return 0;
  if (app.get_option("--role")->count() > 0 && app.get_option("--report-fd")->count() == 0)
    throw Error(Errc::kInvalidArgument,
                "--role: set by rdmaps-perf ps for the processes it starts, not a flag to give it");
  // The children's flags, given by hand, were taken and ignored (or, --report-fd, silenced the run).
  const std::map<std::string, std::vector<std::string>> roles_of = {{"--index", {"server"}},
                                                                    {"--worker", {"worker"}},
                                                                    {"--servers-list", {"worker"}},
                                                                    {"--report-fd", {"server", "worker"}}};
  for (const auto& [flag, roles] : roles_of)
    if (app.get_option(flag)->count() > 0 && std::find(roles.begin(), roles.end(), f.role) == roles.end())
      throw Error(Errc::kInvalidArgument, flag + ": set by rdmaps-perf ps for the processes it starts (--role " +
                                              roles.front() + "), not a flag to give it");
  if (f.role == "driver" && f.workers + f.servers > 256)
    throw Error(Errc::kInvalidArgument, "--workers " + std::to_string(f.workers) + " and --servers " +
                                            std::to_string(f.servers) +
                                            ": a run starts a process for each, at most 256 in all");
  if (f.tensors > f.floats)
    throw Error(Errc::kInvalidArgument, "--tensors " + std::to_string(f.tensors) + " is more than --floats " +
                                            std::to_string(f.floats) + ": every tensor needs at least one float");
  if (f.floats < f.servers)  // said before any server starts, not by the first worker after all of them did
    throw Error(Errc::kInvalidArgument, "--servers " + std::to_string(f.servers) + " is more than --floats " +
                                            std::to_string(f.floats) + ": every server needs at least one float");
  if (f.role == "server") return run_server(f);
  if (f.role == "worker") return run_worker(f);
  return run_driver(f);
}

}  // namespace rdmaps::bench
