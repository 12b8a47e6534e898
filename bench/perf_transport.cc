#include "bench/perf_transport.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/perf_options.h"
#include "bench/perf_report.h"
#include "bench/sample_clock.h"
#include "rdmaps/error.h"
#include "src/tools/child_process.h"
#include "transport/context.h"
#include "transport/memory_limit.h"

namespace rdmaps::bench {

using tools::Child;
using tools::read_all;
using tools::read_report;
using tools::report;
using tools::spawn_self;
using tools::wait_child;
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using transport::Access;

constexpr auto kSetupTimeout = 60s;
constexpr auto kPhaseTimeout = 600s;
constexpr uint16_t kAmId = 1;

enum Command : uint64_t { kPrepare = 1, kPutPingPong, kAmPingPong, kCheck, kQuit };

// Both sides derive the expected bytes of a size from the seed.
void fill_pattern(uint8_t* data, size_t length, uint64_t seed) {
  std::mt19937_64 rng(seed ^ (length * 0x9E3779B97F4A7C15ull));
  size_t i = 0;
  for (; i + 8 <= length; i += 8) {
    uint64_t v = rng();
    std::memcpy(data + i, &v, 8);
  }
  for (uint64_t v = rng(); i < length; ++i, v >>= 8) data[i] = static_cast<uint8_t>(v);
}
uint64_t count_wrong(const uint8_t* data, size_t length, uint64_t seed) {
  std::vector<uint8_t> expected(length);
  fill_pattern(expected.data(), length, seed);
  uint64_t wrong = 0;
  for (size_t i = 0; i < length; ++i) wrong += data[i] != expected[i];
  return wrong;
}
uint8_t tag(uint64_t i) { return static_cast<uint8_t>(i % 255 + 1); }

void send_words(transport::Endpoint& ep, std::initializer_list<uint64_t> words) {
  std::vector<uint64_t> v(words);
  ep.send_control({reinterpret_cast<const uint8_t*>(v.data()), v.size() * 8}, kSetupTimeout);
}
std::vector<uint64_t> recv_words(transport::Endpoint& ep, std::chrono::milliseconds timeout) {
  auto bytes = ep.recv_control(timeout);
  if (bytes.size() % 8 != 0 || bytes.empty())
    throw Error(Errc::kProtocol,
                "perf control message of " + std::to_string(bytes.size()) + " bytes from " + ep.peer_name());
  std::vector<uint64_t> words(bytes.size() / 8);
  std::memcpy(words.data(), bytes.data(), bytes.size());
  return words;
}

// Progresses until done() holds; the clock and `peer` are looked at only
// every 64 Ki spins, so they stay off the latency path. A peer that died
// ends the wait: over shared memory nothing else says so, and it spun for
// the whole phase timeout.
template <typename Done>
void progress_until(transport::Context& ctx, const transport::Endpoint& peer, Done done, const char* what) {
  auto deadline = Clock::now() + kPhaseTimeout;
  for (uint64_t spins = 0; !done();) {
    ctx.progress();
    if ((++spins & 0xffff) != 0) continue;
    if (peer.peer_closed())
      throw Error(Errc::kPeerGone, std::string("waiting for ") + what + ": the peer " + peer.peer_name() +
                                       " closed its connection (its process exited or failed)");
    if (Clock::now() > deadline)
      throw Error(Errc::kTimeout, std::string("waiting for ") + what + ": no data within 600 s");
  }
}

// Spins on a byte another process writes; progresses for emulated transports.
void wait_byte(transport::Context& ctx, const transport::Endpoint& peer, const volatile uint8_t* byte, uint8_t value,
               const char* what) {
  progress_until(
      ctx, peer, [&] { return *byte == value; }, what);
}

struct Flags {
  std::string target_memory = "allocated";  // or "registered": the caller's memory, as pulls land in place
  std::string transport = "auto", op = "put", wait = "event", peer_failure = "off", peer, role = "client",
              listen = "0.0.0.0:13337";
  std::vector<uint64_t> sizes = {8, 64, 512, 4096, 65536, 262144, 1 << 20, 4 << 20, 16 << 20, 64 << 20};
  uint64_t iters = 0;        // 0: auto, per size
  uint64_t window = 0;       // 0: auto, per size
  uint64_t span = 0;         // 0: every message from the same buffer
  uint64_t target_span = 0;  // 0: as span
  uint64_t lat_iters = 2000;
  uint64_t seed = std::random_device{}();
  int report_fd = -1;
  bool json = false;
};

// `loopback`: the peer or listen address is this host's loopback, where the
// library keeps UCX too (ContextOptions::loopback_only): the probe takes the
// path rdmaps' own connections take (tcp over lo alone, not lo and eth0).
transport::ContextOptions context_options(const Flags& flags, bool loopback) {
  transport::ContextOptions o;
  o.loopback_only = loopback;
  o.transport = transport::parse_transport(flags.transport);
  o.name = "rdmaps-perf";
  o.wakeup = flags.wait == "event";
  o.peer_failure = flags.peer_failure == "on" ? transport::ContextOptions::PeerFailure::kOn
                                              : transport::ContextOptions::PeerFailure::kOff;
  return o;
}

// ---- target side ---------------------------------------------------------

int run_server(const Flags& flags) {
  const auto listen = transport::SockAddr::parse(flags.listen);
  auto ctx = transport::create_context(context_options(flags, listen.is_loopback()));
  auto listener = ctx->listen(listen);
  if (flags.report_fd >= 0) {
    int fd = flags.report_fd;
    int port = listener->address().port();
    report(fd, &port, sizeof(port));
    close(fd);
  } else {
    std::printf("rdmaps-perf transport server listening on %s\n", listener->address().to_string().c_str());
    std::fflush(stdout);
  }
  auto ep = listener->accept(kPhaseTimeout);
  const uint64_t seed = recv_words(*ep, kSetupTimeout).at(0);
  const uint64_t max_size = recv_words(*ep, kSetupTimeout).at(0);
  // Memory UCX allocated (mapped for shared memory), or the process's own
  // memory registered with it (what a pull puts into in place).
  std::vector<uint8_t> own(flags.target_memory == "registered" ? max_size : 0);
  auto region = own.empty() ? ctx->allocate(max_size, Access::kRemoteReadWrite)
                            : ctx->register_memory(own.data(), own.size(), Access::kRemoteReadWrite);
  ep->send_control(region->descriptor(Access::kRemoteReadWrite).serialize(), kSetupTimeout);
  auto pong_target = ep->import(transport::RegionDescriptor::parse(ep->recv_control(kSetupTimeout), ep->peer_name()));

  uint64_t am_received = 0, overruns = 0;
  std::deque<transport::Request> am_landing;
  ctx->set_am_handler(kAmId, [&](transport::AmMessage& m) {
    // A message of a --span run names its offset in its header.
    uint64_t offset = 0;
    if (m.header_length == sizeof(offset)) std::memcpy(&offset, m.header, sizeof(offset));
    if (offset > region->size() || m.length > region->size() - offset) {
      overruns += m.length;  // reported as wrong bytes at the check, not landed
      ++am_received;
      return;
    }
    transport::Request landing = ctx->am_receive(m, *region, offset);
    if (!landing.test()) am_landing.push_back(std::move(landing));  // eager data has already landed
    // Release landed requests as they finish (they finish in order), as
    // ucx_perftest does: holding every one of a run's requests until its end
    // grows UCX's request pool and slows each rendezvous reply.
    while (!am_landing.empty() && am_landing.front().test()) am_landing.pop_front();
    ++am_received;
  });
  auto* mem = static_cast<uint8_t*>(region->data());
  for (;;) {
    auto cmd = recv_words(*ep, kPhaseTimeout);
    switch (cmd.at(0)) {
      case kPrepare: {
        size_t size = cmd.at(1), span = cmd.at(3);
        for (size_t at = 0; at < span; at += size) fill_pattern(mem + at, size, seed ^ 1);  // what gets read back
        if (cmd.at(2)) mem[size - 1] = 0;  // ping-pong tags are never 0
        for (auto& r : am_landing) r.wait();
        am_landing.clear();
        am_received = 0;
        send_words(*ep, {0});
        break;
      }
      case kPutPingPong: {
        size_t size = cmd.at(1);
        for (uint64_t i = 1; i <= cmd.at(2); ++i) {
          wait_byte(*ctx, *ep, mem + size - 1, tag(i), "a ping put");
          ep->put(mem, size, *pong_target, 0, region.get()).wait();
        }
        send_words(*ep, {0});
        break;
      }
      case kAmPingPong: {
        size_t size = cmd.at(1);
        for (uint64_t i = 1; i <= cmd.at(2); ++i) {
          progress_until(
              *ctx, *ep, [&] { return am_received >= i; }, "a ping active message");
          ep->am_send(kAmId, nullptr, 0, mem, size, region.get()).wait();
        }
        send_words(*ep, {0});
        break;
      }
      case kCheck: {
        for (auto& r : am_landing) r.wait();
        am_landing.clear();
        // Every piece of the span the messages walked.
        uint64_t wrong = overruns;
        for (size_t at = 0; at < cmd.at(2); at += cmd.at(1)) wrong += count_wrong(mem + at, cmd.at(1), seed);
        send_words(*ep, {wrong});
        overruns = 0;
        break;
      }
      case kQuit:
        send_words(*ep, {0});
        // Close in turn: the client closes first while this side keeps
        // progressing; its bootstrap socket's EOF says it is done.
        try {
          ep->recv_control(kSetupTimeout);
        } catch (const Error& e) {
          if (e.code() != Errc::kPeerGone) throw;
        }
        return 0;
      default:
        throw Error(Errc::kProtocol, "unknown perf command " + std::to_string(cmd.at(0)) + " from " + ep->peer_name());
    }
  }
}

// ---- measuring side ------------------------------------------------------

uint64_t auto_iters(size_t size, const std::string& op, bool native) {
  // About 256 MiB per size (64 MiB where RMA is emulated in software, which
  // moves puts at tens of MB/s), at least 8 and at most 20000 iterations.
  uint64_t budget = (op != "am" && !native) ? (64u << 20) : (256u << 20);
  return std::clamp<uint64_t>(budget / size, 8, 20000);
}

uint64_t auto_window(size_t size) {
  // About 1 MiB in flight, 4 to 64 operations: more only pushes the in-flight
  // buffers out of cache on both sides (tcp am, 256 KiB: 64 in flight ran at
  // 0.9x of ucp_am_bw, 4 in flight at 1.4x; docs/benchmarks.md).
  return std::clamp<uint64_t>((1u << 20) / size, 4, 64);
}

int run_client(const Flags& flags) {
  const std::string& op = flags.op;
  const std::vector<uint64_t>& sizes = flags.sizes;
  const bool json = flags.json;
  const uint64_t fixed_window = flags.window;
  const uint64_t lat_samples = flags.lat_iters;
  const uint64_t seed = flags.seed;
  const size_t max_size = *std::max_element(sizes.begin(), sizes.end());
  // Source and target regions: the largest message, or the span it walks through.
  const size_t target_span = flags.target_span ? flags.target_span : flags.span;
  // A get is checked on its first piece, which must come from the target's first piece.
  if (op == "get" && target_span != flags.span)
    throw Error(Errc::kInvalidArgument, "rdmaps-perf transport: --target-span " + std::to_string(target_span) +
                                            " differs from --span " + std::to_string(flags.span) +
                                            "; a get walks the same span on both sides");
  // A span below a message took one buffer, reused, for the span asked, without a word (--span 1000 with 64 KiB).
  for (const auto& [flag, bytes] : {std::pair{"--span", flags.span}, {"--target-span", flags.target_span}})
    if (bytes != 0 && bytes < max_size)
      throw cli::UsageError(Errc::kInvalidArgument,
                            std::string("rdmaps-perf transport: ") + flag + " " + std::to_string(bytes) +
                                " bytes holds no message of the largest --sizes, " + std::to_string(max_size) +
                                " bytes: give at least that (each size walks whole messages of it), or "
                                "0 for one buffer");
  const size_t region_bytes = std::max<size_t>({max_size, flags.span, target_span});
  // Said here, naming the flag: a span past memory (a local target takes as
  // much again) was killed by the kernel's out-of-memory killer without a word.
  if (const uint64_t need = uint64_t{region_bytes} * (flags.peer.empty() ? 2 : 1) + max_size;
      need > (1u << 30) && flags.role != "server") {
    const transport::AvailableMemory available = transport::available_memory();
    if (available.bytes != 0 && need > available.bytes)
      throw Error(Errc::kInvalidArgument,
                  "--span " + transport::size_text(flags.span) + ": its buffers take " + transport::size_text(need) +
                      (flags.peer.empty() ? " (the source and the local target each one)" : "") + ", but " +
                      transport::size_text(available.bytes) + " is available (" + available.bound +
                      "): a smaller --span" + (flags.peer.empty() ? ", or a target on another host (--peer)" : ""));
  }
  // Started by another benchmark: rows go back through its pipe.
  const int report_fd = flags.report_fd;

  Child child;
  std::string peer = flags.peer;
  if (peer.empty()) {
    // With no peer, the target runs as a child process with the same options.
    child = spawn_self("rdmaps-perf", {"transport", "--role", "server", "--listen", "127.0.0.1:0", "--transport",
                                       flags.transport, "--wait", flags.wait, "--peer-failure", flags.peer_failure,
                                       "--target-memory", flags.target_memory});
    int port = 0;
    read_report(child, &port, sizeof(port), "transport server");
    peer = "127.0.0.1:" + std::to_string(port);
  }
  const auto peer_address = transport::SockAddr::parse(peer);
  auto ctx = transport::create_context(context_options(flags, peer_address.is_loopback()));
  // A parameter server at --peer asks for a secret ("set RDMAPS_SECRET" sent the user after one the benchmark never
  // reads), or, without one, answers with no region ("wrong magic"): either way, say what the peer is not.
  const auto not_a_target = [&](const Error& e) {
    return Error(e.code(), "--peer " + peer + ": " + e.what() +
                               "; but rdmaps-perf transport measures against its own target (rdmaps-perf transport "
                               "--role server), which takes no secret: is this address a parameter server?");
  };
  std::unique_ptr<transport::Endpoint> ep;
  try {
    ep = ctx->connect(peer_address, kSetupTimeout);
  } catch (const Error& e) {
    if (e.code() != Errc::kPermissionDenied) throw;
    throw not_a_target(e);
  }
  send_words(*ep, {seed});
  send_words(*ep, {region_bytes});
  std::unique_ptr<transport::RemoteRegion> remote;
  try {
    remote = ep->import(transport::RegionDescriptor::parse(ep->recv_control(kSetupTimeout), peer));
  } catch (const Error& e) {
    if (e.code() != Errc::kProtocol) throw;
    throw not_a_target(e);
  }
  auto pong = ctx->allocate(max_size, Access::kRemoteWrite);
  ep->send_control(pong->descriptor(Access::kRemoteWrite).serialize(), kSetupTimeout);
  auto src = ctx->allocate(region_bytes, Access::kNone);
  auto* pong_mem = static_cast<uint8_t*>(pong->data());
  auto* buf = static_cast<uint8_t*>(src->data());
  uint64_t pongs = 0;
  std::vector<transport::Request> pong_landing;
  ctx->set_am_handler(kAmId, [&](transport::AmMessage& m) {
    pong_landing.push_back(ctx->am_receive(m, *pong, 0));
    ++pongs;
  });

  if (!json && report_fd < 0) {
    std::string config = "# rdmaps-perf transport: op " + op + ", peer " + peer + "\n# " + ctx->describe() +
                         "\n# rma " + (ep->rma_native() ? "native" : "emulated in software") +
                         "; lanes: " + ep->describe() + "\n# window " +
                         (fixed_window ? std::to_string(fixed_window) : std::string("auto (~1 MiB in flight)")) +
                         ", latency = half round trip (put, am) or one operation (get)\n";
    print_transport_header(config);
    std::fflush(stdout);  // connected: shown before a phase that may run long
  }
  const SampleClock sample_clock;
  int failures = 0;
  for (size_t size : sizes) {
    TransportRow row;
    row.op = op;
    row.transport = transport::transport_name(transport::parse_transport(flags.transport));
    row.rma_native = ep->rma_native();
    row.bytes = size;
    row.iters = flags.iters ? flags.iters : auto_iters(size, op, ep->rma_native());
    row.window = fixed_window ? fixed_window : auto_window(size);
    const uint64_t window = row.window;
    const uint64_t warmup = std::max<uint64_t>(2, row.iters / 10);
    const uint64_t lat_iters = std::min<uint64_t>(lat_samples, row.iters);

    // With --span, message i goes from offset (i * size) mod span (and to
    // that offset mod --target-span), so a model of that size streams from
    // memory instead of cycling through one cache-resident buffer; every
    // piece carries the same bytes, and every piece is checked.
    const uint64_t pieces = std::max<uint64_t>(1, flags.span / size);
    const uint64_t target_pieces = std::max<uint64_t>(1, target_span / size);
    row.span = pieces * size;
    row.target_span = target_pieces * size;
    send_words(*ep, {kPrepare, size, op != "get", row.target_span});
    recv_words(*ep, kPhaseTimeout);

    // Latency phase (skipped with --lat-iters 0, so profiles see the bandwidth phase alone).
    row.lat_samples = lat_iters;  // asked for (has_latency()); what was taken, below
    std::vector<double> samples;
    samples.reserve(lat_iters);
    pong_mem[size - 1] = 0;
    pongs = 0;
    const uint64_t pings = row.has_latency() ? warmup + lat_iters : 0;
    if (op == "put" && pings) send_words(*ep, {kPutPingPong, size, pings});
    if (op == "am" && pings) send_words(*ep, {kAmPingPong, size, pings});
    // One clock read per iteration, each sample running from the previous read
    // to this one (ucx_perftest's method).
    uint64_t previous = sample_clock.now();
    for (uint64_t i = 1; i <= pings; ++i) {
      if (op == "put") {
        buf[size - 1] = tag(i);
        ep->put(buf, size, *remote, 0, src.get()).wait();
        wait_byte(*ctx, *ep, pong_mem + size - 1, tag(i), "a pong put");
      } else if (op == "get") {
        ep->get(buf, size, *remote, 0, src.get()).wait();
      } else {
        ep->am_send(kAmId, nullptr, 0, buf, size, src.get()).wait();
        progress_until(
            *ctx, *ep, [&] { return pongs >= i; }, "a pong active message");
        for (auto& r : pong_landing) r.wait();
        pong_landing.clear();
      }
      const uint64_t now = sample_clock.now();
      // A counter that went backwards (moved to a CPU whose TSC lags) gives no sample.
      if (i > warmup && now >= previous) {
        const double us = sample_clock.to_us(now - previous);
        samples.push_back(op == "get" ? us : us / 2);
      }
      previous = now;
    }
    if (op != "get" && pings) recv_words(*ep, kPhaseTimeout);
    if (pings) row.lat_samples = samples.size();  // a sample the counter lost is not one the percentiles saw
    row.lat_us = Percentiles::of(std::move(samples));

    // Bandwidth phase: a window of operations in flight, flushed at the end.
    for (uint64_t k = 0; k < pieces; ++k) fill_pattern(buf + k * size, size, seed);
    std::vector<transport::Request> ring(window);
    std::vector<uint64_t> offsets(window);  // active-message headers, alive until their send completes
    auto post = [&](uint64_t i) {
      auto& slot = ring[i % window];
      slot.wait();
      const uint64_t local = (i % pieces) * size, target = (i % target_pieces) * size;
      if (op == "put") {
        slot = ep->put(buf + local, size, *remote, target, src.get());
      } else if (op == "get") {
        slot = ep->get(buf + local, size, *remote, target, src.get());
      } else if (target_pieces == 1) {
        slot = ep->am_send(kAmId, nullptr, 0, buf + local, size, src.get());
      } else {
        offsets[i % window] = target;
        slot = ep->am_send(kAmId, &offsets[i % window], sizeof(uint64_t), buf + local, size, src.get());
      }
    };
    // The warm-up walks the whole span once: no first-touch page fault is timed.
    const uint64_t warm = std::max({warmup, pieces, target_pieces});
    for (uint64_t i = 0; i < warm; ++i) post(i);
    for (auto& r : ring) r.wait();
    ep->flush().wait_for(kPhaseTimeout);
    auto t0 = Clock::now();
    for (uint64_t i = warm; i < warm + row.iters; ++i) post(i);
    for (auto& r : ring) r.wait();
    ep->flush().wait_for(kPhaseTimeout);
    row.seconds = std::chrono::duration<double>(Clock::now() - t0).count();

    if (op == "get") {
      row.wrong = 0;
      for (uint64_t k = 0; k < pieces; ++k) row.wrong += count_wrong(buf + k * size, size, seed ^ 1);
    } else {
      send_words(*ep, {kCheck, size, row.target_span});
      row.wrong = recv_words(*ep, kPhaseTimeout).at(0);
    }
    failures += row.wrong != 0;
    if (report_fd >= 0) {
      std::string line = transport_row_json(row) + "\n";
      report(report_fd, line.data(), line.size());
    } else if (json) {
      std::printf("%s\n", transport_row_json(row).c_str());
    } else {
      print_transport_row(row);
    }
    std::fflush(stdout);
  }
  send_words(*ep, {kQuit});
  recv_words(*ep, kPhaseTimeout);
  ep.reset();
  if (child.pid > 0) {
    int status = wait_child(child);
    if (status != 0) {
      std::fprintf(stderr, "rdmaps-perf: the server process failed (status %d)\n", status);
      return 1;
    }
  }
  if (failures) std::fprintf(stderr, "rdmaps-perf: FAILED: %d size(s) moved wrong bytes\n", failures);
  return failures ? 1 : 0;
}

}  // namespace

int perf_transport_main(int argc, char** argv, int first) {
  Flags f;
  CLI::App app(
      "Measures one-sided put/get and active messages between two processes.\n"
      "With no --peer it starts the target side itself on this host.",
      "rdmaps-perf transport");
  cli::set_defaults(app);
  auto capture = [](CLI::Option* o) { return o->capture_default_str(); };
  capture(app.add_option("--transport", f.transport, "UCX transports (auto: UCX_TLS from the environment)")
              ->check(cli::one_of({"tcp", "shm", "auto"})));
  capture(app.add_option("--op", f.op, "operation to measure")->check(cli::one_of({"put", "get", "am"})));
  add_sizes(app, "--sizes", f.sizes, 1, 1ull << 30, "message sizes, e.g. 8,64K,1M (default 8 B .. 64 MiB)");
  add_size(app, "--iters", f.iters, 1, 1ull << 32,
           "timed iterations per size (default: ~256 MiB per size, 64 MiB where RMA is emulated; 8 to 20000)");
  add_size(app, "--window", f.window, 1, 1u << 16,
           "operations in flight in the bandwidth phase (default: ~1 MiB in flight, 4 to 64 operations)");
  add_size(app, "--span", f.span, 0, 1ull << 34,
           "bandwidth phase: walk each size's messages through source and target buffers of this many bytes "
           "(a model streaming from memory; default: one buffer, reused)");
  add_size(app, "--target-span", f.target_span, 0, 1ull << 34,
           "bandwidth phase: the target buffers' bytes, when they differ from --span (e.g. a few inbox slots)");
  // Each sample is kept for the percentiles: 16 Mi of them take 128 MiB (4 Gi aborted on out of memory).
  add_size(app, "--lat-iters", f.lat_iters, 0, 1ull << 24,
           "latency samples per size (at most --iters: lat_samples says how many; 0 skips the phase)");
  capture(app.add_option("--target-memory", f.target_memory,
                         "the target's memory: allocated by UCX, or the process's own registered with it")
              ->check(cli::one_of({"allocated", "registered"})));
  capture(app.add_option("--wait", f.wait, "idle waits block on the UCX event fd (event), or spin (busy)")
              ->check(cli::one_of({"event", "busy"})));
  capture(app.add_option("--peer-failure", f.peer_failure, "UCX peer-failure handling (on costs tcp its RMA lanes)")
              ->check(cli::one_of({"on", "off"})));
  cli::add_switch(app, "--json", f.json, "one JSON object per size instead of the table");
  auto* peer = app.add_option("--peer", f.peer, "connect to a target started with --role server")
                   ->type_name("HOST:PORT")
                   ->check(cli::address());
  capture(app.add_option("--role", f.role, "server: run the target side")->check(cli::one_of({"server", "client"})));
  auto* listen =
      app.add_option("--listen", f.listen, "target's listen address")->type_name("HOST:PORT")->check(cli::address());
  capture(listen);
  app.add_option("--report-fd", f.report_fd, "started by another benchmark: report there")
      ->transform(cli::count(0, INT32_MAX))
      ->group("");
  app.add_option("--seed", f.seed, "data pattern seed (default: random)")->transform(cli::count(0));
  if (!parse(app, argc, argv, first)) return 0;
  // The other side's flag would be ignored without a word.
  if (f.role == "server" && peer->count() > 0)
    throw Error(Errc::kInvalidArgument, "--peer: the target (--role server) connects to nobody; give it --listen");
  if (f.role != "server" && listen->count() > 0)
    throw Error(Errc::kInvalidArgument,
                "--listen: only the target (--role server) listens; a client connects with --peer");
  // The target follows the client's commands; the client, a target's memory.
  for (const char* flag :
       {"--op", "--sizes", "--iters", "--window", "--span", "--target-span", "--lat-iters", "--json", "--seed"})
    if (f.role == "server" && app.get_option(flag)->count() > 0)
      throw Error(Errc::kInvalidArgument, std::string(flag) +
                                              ": the target (--role server) does as its client says; give it to the "
                                              "client (--peer)");
  if (peer->count() > 0 && app.get_option("--target-memory")->count() > 0)
    throw Error(Errc::kInvalidArgument,
                "--target-memory: the target (--role server) chooses its memory; give it there, not to the client");
  if (f.role == "server") return run_server(f);
  return run_client(f);
}

}  // namespace rdmaps::bench
