// The worker side of the parameter server, behind rdmaps::Client: its
// connections (one per server, a lane per server thread), the data path
// (client.cc), connecting (client_connect.cc) and server restarts and leaving
// (client_faults.cc).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "rdmaps/client.h"
#include "rdmaps/error.h"
#include "rdmaps/server.h"
#include "src/launch/server_list.h"
#include "src/metrics/http_endpoint.h"
#include "src/metrics/render.h"
#include "src/ps/gpu_transfer.h"
#include "src/ps/inbox.h"
#include "src/ps/partition.h"
#include "src/ps/protocol.h"
#include "src/ps/write_back.h"
#include "transport/address.h"
#include "transport/context.h"
#include "transport/process_id.h"

namespace rdmaps::ps {

using Clock = std::chrono::steady_clock;

// A server's refusal of a Hello, with its Welcome::accepted code: only
// kRefusedForNow may pass on a retry (and says so to the caller:
// Errc::kRefusedForNow); kRefusedWithoutTheJob answers a reconnect that found
// a process that did not resume.
struct Refusal : Error {
  Refusal(const std::string& what, uint32_t accepted, uint64_t instance = 0)
      : Error(accepted == kRefusedForNow ? Errc::kRefusedForNow : Errc::kProtocol, what),
        accepted(accepted),
        instance(instance) {}
  bool for_good() const { return accepted != kRefusedForNow; }
  uint32_t accepted;
  uint64_t instance;  ///< Welcome::instance of the refusing server (0: not said)
};

// One thread of a server (docs/architecture.md "Server threads"): its own
// endpoint, this worker's inbox there, and the write-backs it sends.
struct Lane {
  uint32_t index = 0;
  uint32_t first_shard = 0, shards = 0;
  std::unique_ptr<InboxWriter> inbox;
  WriteBackReceiver write_back;  // active-message path
  // Declared after what its requests use: a lane that goes closes it first
  // (flushing what it still sends), then frees their buffers.
  std::unique_ptr<transport::Endpoint> ep;
  uint64_t clock_sent = 0;  // the last clock this lane was told
  // Put path: registered_[0, landings) the lane may put pulls into, as it
  // confirmed; offered: as many told (more once one was refused).
  size_t landings = 0, landings_offered = 0;
  uint64_t last_pull = 0;  // the last pull request posted in the running wave of a pull
};

// The counters of a pull, as one value that pull() saves and restores and
// publish() holds back while a pull is under way.
using PullCounters = std::tuple<uint64_t, uint64_t, uint64_t, uint64_t, uint64_t>;
inline auto pull_counters(ClientStats& s) {
  return std::tie(s.pulls, s.pull_bytes, s.pulls_skipped, s.pull_bytes_saved, s.pull_bytes_in_place);
}

struct ServerLink {
  uint32_t index = 0;
  std::string address;
  std::unique_ptr<transport::Region> receive;  // lane mailboxes, versions, parameters: written by the server
  Range range;
  uint32_t shards = 0;
  ReceiveLayout receive_layout{0, 0, 0};
  bool use_am = false;
  std::vector<Lane> lanes;
  std::vector<uint32_t> lane_of;      // by shard
  std::vector<uint64_t> shard_stamp;  // min clock when each shard was last pulled; 0 = never
  std::vector<bool> have_shard;
  std::vector<uint8_t> delivered;  // by shard: copied to the running pull's targets as it landed
  bool offers_landings = false;    // its lanes may put pulls into registered memory
  uint32_t generation = 0;         // connections made after the first (the server restarted)
  uint64_t instance = 0;           // the server process connected to (Welcome::instance)
  uint64_t posted = 0;             // pushes (pieces) posted to it; a restart's checkpoint holds some of them
  uint64_t held_at_connect = 0;    // of them, what it held of this id when this client last connected
  uint64_t connection = 0;         // +1 each time disconnect() closes its lanes
  // A write-back of this connection failed to land: its lane publishes nothing
  // more, so the connection counts as down (a reconnect makes new lanes).
  // Why, for a wait on this server that did not see it fail; empty while none failed.
  std::string write_back_error;
  bool write_back_failed() const { return !write_back_error.empty(); }

  bool down() const {
    if (lanes.empty() || write_back_failed()) return true;
    for (const auto& lane : lanes)
      if (!lane.ep || lane.ep->peer_closed() || lane.ep->failed()) return true;
    return false;
  }

  const Mailbox& mailbox(const Lane& lane) const {
    return *reinterpret_cast<const Mailbox*>(static_cast<const uint8_t*>(receive->data()) +
                                             receive_layout.mailbox_offset(lane.index));
  }
  uint64_t load(const uint64_t& field) const {
    return reinterpret_cast<const std::atomic<uint64_t>&>(field).load(std::memory_order_acquire);
  }
  /// This connection's messages its lanes rejected, as their mailboxes say.
  uint64_t rejected() const {
    uint64_t n = 0;
    if (receive)
      for (const auto& lane : lanes) n += load(mailbox(lane).rejected);
    return n;
  }
  const uint64_t* versions() const {
    return reinterpret_cast<const uint64_t*>(static_cast<const uint8_t*>(receive->data()) +
                                             receive_layout.versions_offset());
  }
};

class ClientImpl {
 public:
  explicit ClientImpl(const ClientOptions& options) : options_(options), config_(options.config) {
    if (options.servers.empty()) throw Error(Errc::kInvalidArgument, "a client needs at least one server address");
    if (options.servers.size() > kMaxServers)
      throw Error(Errc::kInvalidArgument, "ClientOptions::servers lists " + std::to_string(options.servers.size()) +
                                              " servers, more than the " + std::to_string(kMaxServers) +
                                              " a job may have");
    // Every binding checks here: a server refused a larger id only at connect(), as a protocol error.
    if (options.worker >= kMaxWorkers)
      throw Error(Errc::kInvalidArgument, "ClientOptions::worker " + std::to_string(options.worker) + " is not below " +
                                              std::to_string(kMaxWorkers) + ", the most a server serves");
    if (options.timeout <= std::chrono::milliseconds(0))
      throw Error(Errc::kInvalidArgument, "ClientOptions::timeout is " + std::to_string(options.timeout.count()) +
                                              " ms: it bounds every wait of the client and needs at least 1 ms");
    if (options.workers != 0 && options.worker >= options.workers)  // the servers refused it at connect()
      throw Error(Errc::kInvalidArgument, "ClientOptions::worker " + std::to_string(options.worker) +
                                              " is not below ClientOptions::workers (" +
                                              std::to_string(options.workers) + "): worker ids are 0 to workers - 1");
    if (const std::string why = config_error(config_); !why.empty())  // a Config built in code
      throw Error(Errc::kInvalidArgument, "ClientOptions::config: " + why);
    // Deadlines are now + timeout: milliseconds::max() would overflow the clock.
    options_.timeout = std::min(options_.timeout, kLongestTimeout);
    // The form, not the name: a host that does not resolve yet may by connect().
    launch::check_server_list(options.servers, "ClientOptions::servers");
    if (!options.metrics.empty())
      metrics_ = std::make_unique<metrics::HttpEndpoint>(options.metrics, "--metrics", [this] {
        std::unique_lock<std::mutex> lock(published_mu_);
        const ClientStats s = published_;
        const uint64_t clock = published_clock_;
        lock.unlock();
        return metrics::render_worker_metrics(s, options_.worker, clock);
      });
  }
  ~ClientImpl();

  void declare(const std::string& name, size_t floats);
  void connect();
  void send(const std::string& name, std::span<const float> values, MsgType type);
  void pull(std::span<const PullTarget> targets);
  void register_memory(std::span<float> memory);
  void clock(bool barrier);
  void expire_cache() {
    for (auto& link : links_) link.have_shard.assign(link.have_shard.size(), false);
  }
  uint64_t clock_value() const { return clock_; }
  ClientStats stats() const { return stats_; }
  uint64_t messages_rejected() const {
    uint64_t n = rejected_closed_;
    for (const auto& link : links_) n += link.rejected();
    return n;
  }
  /// Set once a server did not come back (or came back without the job):
  /// every later call fails with it instead of using a half-made connection.
  const std::optional<Error>& broken() const { return broken_; }
  std::string metrics_address() const { return metrics_ ? metrics_->address() : ""; }
  /// After each call: the copy a scrape reads, so that it never reads
  /// stats_ while the caller's thread changes it. Assignment reuses the
  /// copy's storage: no allocation once push_paths has its size.
  /// Also during a long wait (at most every kPublishEvery), so that a worker
  /// held by a straggler shows its clock wait growing, not frozen at its last step.
  void publish() {
    if (!metrics_) return;
    const auto now = Clock::now();
    std::lock_guard<std::mutex> lock(published_mu_);
    published_ = stats_;
    if (pull_counters_before_) pull_counters(published_) = *pull_counters_before_;  // may yet be taken back (pull())
    if (clock_wait_since_)
      published_.clock_wait_seconds += std::chrono::duration<double>(now - *clock_wait_since_).count();
    published_clock_ = clock_;
    last_publish_ = now;
  }
  void end_clock_wait() {
    if (!clock_wait_since_) return;
    stats_.clock_wait_seconds += std::chrono::duration<double>(Clock::now() - *clock_wait_since_).count();
    clock_wait_since_.reset();
  }
  void set_learning_rate(std::optional<float> lr) {
    if (lr && !(std::isfinite(*lr) && *lr >= 0)) {
      char text[32];  // %g: to_string said -1e-10 was "-0.000000"
      std::snprintf(text, sizeof(text), "%g", static_cast<double>(*lr));
      throw Error(Errc::kInvalidArgument, std::string("learning rate ") + text + ": needs a finite value >= 0");
    }
    // Small pushes held back to go with their neighbours carry the rate they
    // were pushed at, not the new one (read when they are sent).
    if (lr != learning_rate_ && partition_) {
      try {
        flush_gathered();
      } catch (...) {
        learning_rate_ = lr;  // asked for all the same: later pushes carry it (Python sent it once)
        throw;
      }
    }
    learning_rate_ = lr;
  }

 private:
  struct Piece {
    ServerLink* link;
    Lane* lane;
    uint32_t generation;  // link's, when cut: a piece for a server that restarted since is not sent
    uint32_t shard;
    uint64_t base_version;
    uint32_t offset, length;
    size_t source;  // byte offset of the piece in the data sent
  };
  /// Reorders pieces (grouped by lane, in shard order) so that consecutive
  /// ones go to different lanes: the lanes apply in parallel only if each has
  /// work, and a lane's credits run out after a few pieces.
  void interleave_lanes(std::vector<Piece>& pieces);
  /// One pass of send() over `pieces` (host memory): posted, or gathered
  /// where `gathers`; a piece whose server restarted during it is skipped.
  void send_pieces(std::vector<Piece>& pieces, const void* source, size_t elem, MsgType type, uint16_t flags,
                   bool gathers);
  /// Adds a push's piece of part of a shard to its shard's gathered run,
  /// sending the run first unless the piece adjoins it.
  void gather(const Piece& p, const uint8_t* payload);
  /// Bytes per float on the wire of pushes from host memory (f32 or bf16).
  size_t wire_elem() const { return config_.wire == WireFormat::kBf16 ? sizeof(uint16_t) : sizeof(float); }
  /// Sends each gathered run as one push (before a clock, a pull, an init
  /// or a device push, and leaving).
  void flush_gathered();
  void flush_run(size_t run);
  /// Device pieces through the staging ring; false when a server was
  /// reconnected during it (the pieces not yet sent were dropped).
  bool send_staged(const std::vector<Piece>& pieces, const uint8_t* device_source, size_t elem, MsgType type,
                   uint16_t flags);
  /// The transfer of device tensors on GPU `device` (the first one's makes it;
  /// another GPU's is refused: one worker, one GPU).
  GpuTransfer& gpu(int device, const std::string& tensor);
  /// Joins server `index`: admission, then its lanes. The first connect waits
  /// for a server not listening yet (IfRefused::kRetry; workers may start
  /// before their servers), a reconnect's own loop tries again instead.
  /// Each wait on the server takes at most the client's timeout and ends by
  /// `deadline` (a reconnect's attempt; the first connect: none).
  Welcome connect_one(uint32_t index, transport::IfRefused if_refused, Clock::time_point deadline);
  /// Asks server `index` whether it would admit this worker (Hello::probe);
  /// returns its answer, or throws its refusal or why it could not be asked.
  /// Waits for a server not listening yet, as connect_one does.
  Welcome probe(uint32_t index);
  /// The control endpoint to server `index`; a failure names the index.
  std::unique_ptr<transport::Endpoint> connect_control(uint32_t index, std::chrono::milliseconds timeout,
                                                       transport::IfRefused if_refused);
  /// Probes every server; throws if one is listed twice, or if some hold a
  /// job's parameters and others none.
  void probe_all();
  /// Closes the probes' connections without waiting for the servers.
  void end_probes();
  /// Throws Error(kInvalidArgument) naming two servers whose probe answers
  /// say they are not one job's: worker counts, rules, jobs held.
  void check_servers_agree(const std::vector<Welcome>& answers) const;
  Hello hello() const;
  /// Sends `hello` on `control` and returns the answer; throws a refusal.
  Welcome ask(transport::Endpoint& control, const Hello& hello, const std::string& address,
              std::chrono::milliseconds timeout) const;
  /// Gives `link`'s lanes (in `hello`) the registered memory they may put pulls into.
  void offer_landings(ServerLink& link, const transport::Endpoint& ep, LaneHello& hello);
  /// Memory registered after connect(): offered to every lane of a put path,
  /// each in sequence with its messages; returns once the lanes confirmed it.
  void offer_late_landings();
  void pull_once(std::span<const PullTarget> targets);
  // Server restarts (Config::reconnect_ms, docs/cluster.md "Checkpoints").
  /// After `cause` interrupted an operation: lets `inflight` finish or fail,
  /// then reconnects every server that closed; rethrows `cause` if none did
  /// or reconnecting is off, throws if a server does not come back in time.
  void recover(const Error& cause, std::vector<transport::Request>& inflight);
  /// Moves the sends of `requests` that have not ended to abandoned_ (they
  /// may still read their buffers: released, those could be freed under
  /// them) and empties it. Out of memory: released, as before retire() existed.
  void abandon_pending(std::vector<transport::Request>& requests) noexcept;
  void reconnect(ServerLink& link, const Error& cause);
  /// Leaves `link` closed and the client broken() by `why`, then throws it.
  [[noreturn]] void give_up(ServerLink& link, const Error& why);
  /// Closes `link`'s lanes; what was gathered for it is lost with them.
  void disconnect(ServerLink& link);
  /// Waits for `requests` to complete by one deadline (the call's timeout, or
  /// leaving's); interrupt() ends it with kCancelled.
  void complete(std::vector<transport::Request>& requests);
  Clock::time_point deadline() const { return std::min({Clock::now() + options_.timeout, leave_by_, attempt_by_}); }
  /// What a wait until `by` names in its timeout (at least 1 ms: an attempt's last step may overrun it).
  static std::chrono::milliseconds bound_of(Clock::time_point by) {
    return std::max(std::chrono::ceil<std::chrono::milliseconds>(by - Clock::now()), std::chrono::milliseconds(1));
  }
  /// Pulls every shard of `link` into the receive region: the server's DC
  /// backups of this worker start from what it holds now.
  void refetch(ServerLink& link);
  void on_write_back(transport::AmMessage& m);
  /// A write-back payload landed in `link`'s receive region: copies it to the
  /// running pull's host targets now, while the rest is still on the wire.
  void deliver(ServerLink& link, uint64_t offset, uint64_t bytes, bool in_place);
  void register_with_transport();
  WriteBackReceiver::Destination in_place(const ServerLink& link, uint64_t offset, uint64_t bytes) const;
  /// Where in registered memory the running pull's global floats `landed`
  /// belong, when its host targets that want any of them take all of them:
  /// the index in registered_ and the byte in it; none: registered_.size().
  std::pair<size_t, uint64_t> landing_of(Range landed) const;
  /// True if anything moved. A write-back that failed to land throws, or, for
  /// a server other than `only` (a wait on one server), marks that one down.
  bool progress(const ServerLink* only = nullptr);
  /// Posts one message into this worker's inbox on `lane`, once it has a
  /// credit; `inflight` gets the requests that keep its buffers busy.
  uint64_t post(ServerLink& link, Lane& lane, MsgType type, uint32_t shard, uint64_t base_version, uint32_t offset,
                uint32_t length, const void* payload, std::vector<transport::Request>& inflight, uint16_t flags = 0,
                uint32_t landing = 0, uint64_t landing_offset = 0);
  /// Waits until `lane` wrote back the pull numbered `seq`, then marks the
  /// shards of `link` that `fetched` (global floats) covers whole as fetched
  /// (when and at which clock), unless `!stamp`: the lane's mailbox may
  /// already tell a later request's clock.
  void await_pull(ServerLink& link, const Lane& lane, uint64_t seq, Range fetched, const ServerLink* only = nullptr,
                  bool stamp = true);
  /// Polls until done(); throws on timeout or when a server closed (only
  /// `link`'s, when given). `what()` says what was awaited, made for an error
  /// only: built for every wait, the text cost each clock and pull its
  /// allocations (hot-path review).
  template <typename Done, typename What>
  void wait(Done&& done, What&& what, const ServerLink* link = nullptr);
  /// wait() for the staging ring's copies (client_push.cc; wait() is defined in client.cc).
  void wait_for_copy(cuda::StagingRing& ring, int buffer);
  void warn_of_resumes_apart() const;
  /// The global floats a write-back payload of `bytes` at `offset` of
  /// `link`'s receive region carries (offset at or past its parameters).
  static Range floats_at(const ServerLink& link, uint64_t offset, uint64_t bytes) {
    const uint64_t from = offset - link.receive_layout.params_offset();
    return {link.range.begin + from / sizeof(float), link.range.begin + (from + bytes) / sizeof(float)};
  }
  /// The shard of `link` that holds global float `pos`.
  uint32_t shard_of(const ServerLink& link, uint64_t pos) const {
    return static_cast<uint32_t>((pos - link.range.begin) / config_.shard_floats);
  }
  void require_connected(const char* op) const {
    if (!partition_) throw Error(Errc::kInvalidArgument, std::string(op) + " before connect()");
  }
  void check_size(const std::string& name, const Range& r, size_t given, const char* op) const {
    if (given != r.size())
      throw Error(Errc::kInvalidArgument, std::string(op) + " of '" + name + "': " + std::to_string(given) +
                                              " floats given, the tensor was declared with " +
                                              std::to_string(r.size()));
  }

  static constexpr std::chrono::milliseconds kLongestTimeout{std::chrono::hours(24 * 365 * 100)};
  ClientOptions options_;
  Config config_;
  std::optional<Error> broken_;
  std::vector<TensorDecl> declared_;
  std::unordered_set<std::string> declared_names_;  // declare() refuses a name twice without a scan
  std::unique_ptr<transport::Context> context_;
  // register_memory(): memory pulls may land in, each registered with
  // context_ while there is one (dropped before it goes).
  struct Registered {
    float* begin;
    float* end;
    std::unique_ptr<transport::Region> region;
  };
  std::vector<Registered> registered_;
  std::vector<ServerLink> links_;
  std::unordered_map<const transport::Endpoint*, std::pair<uint32_t, uint32_t>> by_endpoint_;  // link, lane
  std::unique_ptr<Partition> partition_;
  uint64_t clock_ = 0;
  uint64_t job_ = 0;  // Welcome::job of server 0 (0: not connected yet)
  // Each server's probe connection, open while connect() joins them: a server
  // that sees one close after the joining notice counts this worker lost.
  std::vector<std::unique_ptr<transport::Endpoint>> probes_;
  std::optional<float> learning_rate_;       // none: the servers' own
  std::vector<float> residual_;              // bf16 wire: rounding error not yet sent, by global float
  std::vector<uint16_t> wire_;               // bf16 wire: the tensor being pushed, encoded
  std::unique_ptr<GpuTransfer> gpu_;         // made at the first device pointer
  std::vector<Piece> pieces_, interleaved_;  // send(): scratch kept across calls
  // Pushes of small tensors, adjoining in one shard, go as one piece: each
  // message over tcp waits for a credit, and a model of 1,000 small tensors
  // spent 12x the time of one tensor on them (docs/protocol.md "Small tensors").
  // A run per shard, for a few shards at once: a tensor's pieces in two
  // shards, each joined by its neighbours, stay two runs.
  struct Gathered {
    ServerLink* link = nullptr;  // none: nothing gathered
    Lane* lane = nullptr;
    uint32_t generation = 0, shard = 0;
    uint32_t begin = 0, end = 0;                // floats within the shard
    uint64_t base_version = 0;                  // of the copy its pieces were computed on
    std::optional<float> learning_rate;         // the worker's rate when its first piece was gathered
    std::unique_ptr<transport::Region> buffer;  // one shard, registered
  };
  static constexpr size_t kGatherRuns = 4;
  // Over shared memory a put is itself a CPU copy: gathering pieces larger
  // than this only doubled it (measured in docs/benchmarks.md, "Session 17").
  static constexpr size_t kGatherPutBytes = 32 << 10;
  std::array<Gathered, kGatherRuns> gathered_;
  size_t next_run_ = 0;  // the run a new shard takes when all are in use
  std::vector<transport::Request> gather_inflight_;
  // Sends a recovery stopped waiting for: they read this worker's buffers
  // until they end, so a link's buffers go with them (Context::retire).
  std::vector<transport::Request> abandoned_;
  // Payloads an abandoned send may read that no link owns (landing offers'
  // descriptors): kept until the client's buffers are retired.
  std::vector<std::vector<uint8_t>> abandoned_payloads_;
  std::vector<size_t> runs_;  // send(): scratch kept across calls
  // By segment (Partition::segment()): the shard version the worker's copy of
  // it was pulled at, which its pushes carry. Not the shard's version word: a
  // pull of one tensor of a shard moves that for all of them.
  std::vector<uint64_t> copy_versions_;
  std::vector<std::pair<uint64_t, uint64_t>> noted_versions_;  // pull(): (segment, version) once its copy lands
  // pull(): one request per run of adjoining targets and lane; scratch kept across calls.
  struct Fetch {
    ServerLink* link;
    Lane* lane;
    Range floats;         // global
    size_t first_target;  // in pull_order_: the first target that overlaps it
    uint32_t wave = 0;    // posted after the requests of earlier waves were answered
    bool shares_shard;    // with another request of this pull
    uint64_t seq = 0;
    bool in_place = false;  // put straight into registered memory
  };
  std::vector<Fetch> fetch_;
  std::vector<Range> ranges_;
  std::vector<uint32_t> indices_;   // by target of pulling_: its tensor's index
  std::vector<size_t> pull_order_;  // targets by first float
  void plan_fetches();              // fetch_ for the targets of ranges_
  void note_copy_versions(const Fetch& f);
  std::span<const PullTarget> pulling_;       // the running pull's targets (ranges_), empty between pulls
  std::vector<int> device_;                   // by target of pulling_: its GPU, -1 for host memory
  std::vector<transport::Request> inflight_;  // send(): scratch kept across calls
  std::vector<std::vector<transport::Request>> staged_busy_;  // send_staged(): a staging buffer's sends, kept too
  ClientStats stats_;
  uint64_t rejected_closed_ = 0;  // messages_rejected() of the connections closed
  // A pull under way: its counters as they were before it (what publish() shows meanwhile).
  std::optional<PullCounters> pull_counters_before_;
  Clock::time_point last_clock_call_{};
  Clock::time_point leave_by_ = Clock::time_point::max();    // every wait ends by then once leaving
  Clock::time_point attempt_by_ = Clock::time_point::max();  // and by the end of a reconnect's attempt

 public:
  // Client's calls check these (client.cc, `Call`): one call at a time, from
  // the process that made the client, none after interrupt().
  std::atomic<bool> in_call_{false};
  std::atomic<bool> interrupted_{false};
  const pid_t owner_pid_ = transport::this_process_id();  // from here on forks are watched
  uint32_t worker() const { return options_.worker; }

 private:
  static constexpr std::chrono::seconds kPublishEvery{1};
  std::optional<Clock::time_point> clock_wait_since_;  // clock() waits for the slowest worker since then
  Clock::time_point last_publish_{};
  std::mutex published_mu_;
  ClientStats published_;
  uint64_t published_clock_ = 0;
  std::unique_ptr<metrics::HttpEndpoint> metrics_;  // last: stopped before what it reads goes
};

}  // namespace rdmaps::ps
