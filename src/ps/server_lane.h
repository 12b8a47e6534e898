// One thread of a parameter server (a lane): it owns a contiguous run of the
// server's shards and everything that touches them: their parameters,
// optimizer state and DC backups (a ShardStore), every worker's inbox for
// them, the write-backs from them, and its own UCX context, listener and
// endpoints. Nothing on its data path is shared with another thread: no lock,
// no atomic read-modify-write. The server's control thread admits workers and
// hands each a token; a worker then connects to every lane
// (docs/architecture.md "Server threads").
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "rdmaps/config.h"
#include "rdmaps/server.h"
#include "src/ps/admission.h"
#include "src/ps/checkpoint.h"
#include "src/ps/closing_endpoints.h"
#include "src/ps/inbox.h"
#include "src/ps/partition.h"
#include "src/ps/pending_peers.h"
#include "src/ps/refusal_log.h"
#include "src/ps/shard_store.h"
#include "src/ps/step_cover.h"
#include "src/ps/update_rules.h"
#include "src/ps/worker_copy.h"
#include "src/ps/write_back.h"
#include "transport/context.h"

namespace rdmaps::ps {

/// What the control thread decided for a worker id; written by it before the
/// Welcome goes out, read by the lanes when the worker connects to them.
struct AdmissionTicket {
  std::atomic<uint64_t> token{0};         ///< 0: not admitted
  std::atomic<uint32_t> use_am{0};        ///< push path: 1 active messages, 0 puts
  std::atomic<uint64_t> start_clock{0};   ///< a rejoining worker's clock, the same on every lane
  std::atomic<uint64_t> reconnect_ms{0};  ///< how long it tries to come back when its connection drops (Hello)
  CopyHandoff copies;                     ///< the worker's copy per lane, made and faulted in for this token

  /// The fields as a unit, for ticket `token`; empty when that is not the
  /// ticket now (never admitted, or a newer Hello of the id re-admitted it
  /// while they were read: its fields went with another token). The control
  /// thread clears the token, changes the fields, then publishes the new one.
  /// A lane reads it only while flagged admitting (ServerLane::live_or_admitting),
  /// the first load sequentially consistent with the control thread's clear.
  struct Fields {
    bool use_am;
    uint64_t start_clock;
    uint64_t reconnect_ms;
  };
  std::optional<Fields> read(uint64_t wanted) const {
    if (wanted == 0 || token.load(std::memory_order_seq_cst) != wanted) return std::nullopt;
    const Fields f{use_am.load(std::memory_order_relaxed) != 0, start_clock.load(std::memory_order_relaxed),
                   reconnect_ms.load(std::memory_order_relaxed)};
    std::atomic_thread_fence(std::memory_order_acquire);
    if (token.load(std::memory_order_relaxed) != wanted) return std::nullopt;
    return f;
  }
};

struct LaneSetup {
  uint32_t index = 0, lanes = 1;
  const ServerOptions* server = nullptr;  ///< index, servers, workers, listen host, logging
  Config config;
  uint64_t staleness = 0;  ///< the job's bound (its first worker's, or a checkpoint's)
  const Partition* partition = nullptr;
  uint32_t first_shard = 0, shards = 0;              ///< of this server's shards
  AdmissionTicket* tickets = nullptr;                ///< one per worker id
  MemoryToFree* free_later = nullptr;                ///< where the memory of copies the lane drops goes
  bool planned_copies = false;                       ///< the memory plan counted a copy of the range per worker
  std::atomic<bool>* said_unplanned_copy = nullptr;  ///< the server's: one warning of an uncounted copy
  int gpu_device = -1;                               ///< --gpu-shard: the GPU current in the Server's constructor
};

/// Staleness histogram buckets; the last counts tau >= kStalenessBuckets - 1.
/// Round-robin workers make pushes workers - 1 stale: kMaxWorkers of them
/// are still counted exactly (the overflow needs stragglers or long delays).
constexpr size_t kStalenessBuckets = kMaxWorkers + 1;

/// Latency buckets (ServerStats' DurationHistogram): at most 1, 2, 4 ...
/// 2^20 microseconds (about a second), then longer.
constexpr size_t kDurationBuckets = 22;
inline size_t duration_bucket(uint64_t ns) {
  const uint64_t us = (ns + 999) / 1000;
  return us <= 1 ? 0 : std::min<size_t>(std::bit_width(us - 1), kDurationBuckets - 1);
}

/// Why a lane rejected a message, for the count by reason (metrics label).
enum class RejectReason : uint8_t { kSequence, kHeader, kNonFinite, kLanding };
constexpr size_t kRejectReasons = 4;
/// The longest a lane waits on one send to a worker before judging it gone.
constexpr std::chrono::seconds kIoTimeout{30};
constexpr size_t kLivenessChecksPerCall = 32;  // workers whose sockets one housekeeping round polls
const char* reject_reason_name(RejectReason reason);

/// Counters a lane alone writes (load, add, store: no read-modify-write);
/// the control thread reads them for Server::stats().
struct LaneCounters {
  explicit LaneCounters(uint32_t workers);
  std::atomic<uint64_t> pushes{0}, bytes_in{0}, bytes_out{0}, pulls{0}, clocks{0}, rejected{0}, dropped{0};
  std::atomic<uint64_t> inits{0};  ///< init messages taken: they change the model too (checkpoints)
  /// Clocks, leaves and deaths this lane took (every lane, unlike the counts
  /// lane 0 keeps for the server): they change a checkpoint's workers.
  std::atomic<uint64_t> worker_events{0};
  std::atomic<uint64_t> min_clock{0}, workers_left{0}, workers_lost{0};
  std::atomic<uint64_t> longest_setup_us{0};
  std::atomic<uint64_t> stall_warnings{0};  ///< longest the lane spent on connections instead of its inboxes
  std::atomic<uint64_t> max_clock{0}, staleness_sum{0};
  std::atomic<uint64_t> staleness_max{0};  ///< exact, where the histogram's last bucket is not
  std::vector<std::atomic<uint64_t>> applied, rejected_by, bytes_from, staleness;
  /// By worker: its pushes this lane took in, applied or not (dropped above tau_max, refused as
  /// non-finite): what a reconnect did not lose (Welcome::pushes_held).
  std::vector<std::atomic<uint64_t>> taken;
  std::array<std::atomic<uint64_t>, kRejectReasons> rejected_for{};
  // One timestamp pair per piece: an update's apply, a pull's copy and put.
  std::array<std::atomic<uint64_t>, kDurationBuckets> apply_latency{}, write_back_latency{};
  std::atomic<uint64_t> apply_ns{0}, write_back_ns{0};
  static void add(std::atomic<uint64_t>& c, uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  static void raise(std::atomic<uint64_t>& c, uint64_t v) {
    if (v > c.load(std::memory_order_relaxed)) c.store(v, std::memory_order_relaxed);
  }
};

/// A lane's part of a checkpoint, taken shard by shard between pushes.
struct LaneSnapshot {
  /// The lane's range, `floats` of each; state null when the rule keeps none.
  /// Not zeroed when made: written shard by shard as they are copied (zeroing
  /// the range held the lane at its first checkpoint, every worker of it).
  std::unique_ptr<float[]> params, state;
  size_t floats = 0;
  std::vector<uint64_t> versions;     ///< of the lane's shards
  std::vector<uint64_t> state_since;  ///< of the lane's shards: where their optimizer state started
  std::vector<CheckpointWorker> workers;
};

class ServerLane {
 public:
  explicit ServerLane(const LaneSetup& setup);
  ~ServerLane();
  ServerLane(const ServerLane&) = delete;
  ServerLane& operator=(const ServerLane&) = delete;

  uint16_t port() const { return port_; }
  uint32_t first_shard() const { return setup_.first_shard; }
  uint32_t shards() const { return setup_.shards; }
  /// Whether a worker on push path `use_am` gets a copy of this lane's range
  /// (write-back source, DC backup), and its size: what the control thread
  /// makes for the lane when it admits the worker. `puts_wait_for_it`: puts
  /// to that worker complete only while it drives its UCX (emulated: tcp, or
  /// into its own memory over shared memory in UCX 1.13), so the lane may not
  /// put from the parameters and wait (a worker that stopped held the lane 30 s).
  bool needs_copy(bool use_am, bool puts_wait_for_it) const {
    return write_back_copies(setup_.config.rule, use_am) || !direct_source_ || puts_wait_for_it;
  }
  size_t copy_bytes() const { return copy_bytes_; }
  /// Serves on its own thread until stop(), or until every worker left.
  void start();
  void stop() { stop_.store(true); }
  void join();
  /// Closes every worker's connection now, so that a worker of a stopped
  /// server hears it at once instead of waiting out its timeout; waits for
  /// none of them (ClosingEndpoints::close_all). Only after join(); the
  /// counters stay for stats().
  void disconnect_all();
  /// Whether every worker left or died and none reconnects (its housekeeping's
  /// view; false from a worker's admission on): the control thread, which
  /// also knows the Hellos under way, ends the job (--keep-running: never).
  bool done() const { return done_.load(std::memory_order_acquire); }
  /// A new admission of `worker` (a ticket issued): reached() is false until it connects here.
  void expect(uint32_t worker) { reached_[worker].store(false, std::memory_order_relaxed); }
  uint32_t index() const { return setup_.index; }
  /// Whether this lane's thread stopped on an error, and why (failure(), read once failed()).
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  std::string failure() const { return failure_.empty() ? "out of memory" : failure_; }
  Errc failure_code() const { return failure_code_; }
  /// Whether `worker` is connected to this lane now.
  bool live(uint32_t worker) const { return live_[worker].load(std::memory_order_acquire); }
  /// ... or being admitted by it under a ticket it read: the control thread,
  /// replacing the ticket, holds the newer Hello as for a live worker. Read
  /// in this order (a lane sets live before it clears admitting).
  bool live_or_admitting(uint32_t worker) const {
    return admitting_[worker].load(std::memory_order_seq_cst) || live_[worker].load(std::memory_order_seq_cst);
  }
  /// Asks the lane to look at `worker`'s connection on its next turn rather
  /// than when the liveness checks come round to it: a restarted worker's
  /// Hello waits on it, and a busy lane of 100 workers took longer than the
  /// wait (kPredecessorWait). Any thread.
  void check_soon(uint32_t worker) {
    suspects_[worker].store(true, std::memory_order_relaxed);
    any_suspect_.store(true, std::memory_order_release);
  }
  /// `worker` died while it joined the job's servers, before it reached this
  /// one (JoiningWorkers): counted lost, as the servers it joined count it,
  /// and back within `reconnect_ms` or never. Any thread; the lane takes it
  /// on its next turn, and leaves alone a worker that reached it meanwhile.
  void forsake(uint32_t worker, uint64_t reconnect_ms) {
    forsaken_[worker].store(reconnect_ms + 1, std::memory_order_release);
    any_forsaken_.store(true, std::memory_order_release);
  }
  /// Whether `worker` ever connected to this lane (one admitted that never did holds its clock).
  bool reached(uint32_t worker) const { return reached_[worker].load(std::memory_order_acquire); }
  const LaneCounters& counters() const { return counters_; }

  // Checkpoints (lane_checkpoint.cc). The control thread asks for snapshot
  // `sequence`; the lane takes it as of that moment, copy-on-write: one shard
  // per turn of its loop, and a shard about to change first, so serving pauses
  // no longer than one piece's apply. It publishes the snapshot whole.
  void request_snapshot(uint64_t sequence) { snapshot_wanted_.store(sequence, std::memory_order_release); }
  /// Whether snapshot `sequence` is complete; it is left alone until the next request.
  bool snapshot_ready(uint64_t sequence) const { return snapshot_taken_.load(std::memory_order_acquire) == sequence; }
  const LaneSnapshot& snapshot() const { return snapshot_; }
  /// The whole snapshot at once, on the caller's thread: only while the lane's
  /// thread is not running. A snapshot in progress is dropped: this one is of now.
  void snapshot_now(uint64_t sequence);
  /// Before start(): parameters, state, versions and workers from a checkpoint
  /// of this server, already checked against its table and worker count.
  void restore(const Checkpoint& checkpoint);

 private:
  struct Worker {
    uint32_t id = 0;
    bool connected_once = false, live = false;
    bool departed = false;  // its connection closed: take in what it sent, send it nothing
    // It died (not left) and keeps reconnecting until then (--reconnect): the job is not done before.
    std::chrono::steady_clock::time_point back_by{};
    uint64_t reconnect_ms = 0;  // its ticket's, read when it connected (a newer ticket is another process's)
    std::unique_ptr<transport::Endpoint> ep;
    std::unique_ptr<WorkerCopy> copy;  // parameters last sent: write-back source and DC backup
    std::unique_ptr<InboxReader> inbox;
    std::unique_ptr<WriteBackSender> writer;
    uint64_t clock = 0;
    std::chrono::steady_clock::time_point clock_since{};  // when `clock` last changed
    bool stall_logged = false;
    uint64_t pushes = 0;             // pushes (pieces) taken in (LaneCounters::taken): what a checkpoint accounts for
    uint64_t step = 1;               // +1 per clock
    std::vector<StepCover> stepped;  // by shard: what its current step covered; sized at its first push
    Mailbox mailbox{};
    bool mailbox_owed = false;  // not sent while the last one was under way: in owed_
    std::string name;
  };

  void run();
  /// The lane's thread ends on `error`: says so, and lets its workers go.
  void failed(std::exception_ptr error) noexcept;
  // Set-up (lane_admission.cc): answers a LaneHello, never throwing.
  void admit(std::unique_ptr<transport::Endpoint> ep, const std::vector<uint8_t>& message);
  /// Connects the worker (the endpoint moves in) or throws Error with the reason to refuse.
  void admit_checked(std::unique_ptr<transport::Endpoint>& ep, const LaneHello& hello);
  /// Answers a LaneHello with `code` (kRefused, or kRefusedForNow where a retry may pass) and `why`.
  void refuse(transport::Endpoint& ep, const std::string& why, uint32_t code = kRefused);
  // Data path (server_lane.cc).
  bool poll_inbox(Worker& w);
  void handle(Worker& w, const SlotHeader& h, const uint8_t* payload);
  void take(Worker& w);
  void apply_push(Worker& w, const SlotHeader& h, size_t local, const void* g);
  void write_back(Worker& w, const SlotHeader& h);
  void add_landing(Worker& w, const SlotHeader& h, const uint8_t* payload);
  /// A region the worker offers for pulls to be put into, imported on `ep`; `what` names it in the errors.
  static std::unique_ptr<transport::RemoteRegion> import_landing(transport::Endpoint& ep,
                                                                 std::span<const uint8_t> descriptor,
                                                                 const std::string& peer, const std::string& what);
  /// A copy the control thread did not make for `w`: warned of once per server where the plan did not count it.
  void say_unplanned_copy(const Worker& w);
  void send_mailbox(Worker& w);
  /// Sends the mailboxes that waited for the ones before them; true if any went.
  bool send_owed_mailboxes();
  void update_min_clock();
  uint64_t holder() const;  // Mailbox::holding of a worker at min_clock_
  void publish_holding();
  void clock_advanced(uint64_t before, uint64_t now);
  void on_push_am(transport::AmMessage& m);
  bool complete_landings();
  // Faults (lane_faults.cc).
  void reject(Worker& w, RejectReason reason, const std::string& why);
  void drop(Worker& w, const char* why);
  void check_liveness();
  void check_suspects();  // the workers check_soon() named (after taking any_suspect_)
  void take_forsaken();   // the workers forsake() named (after taking any_forsaken_)
  void check_one(Worker& w);
  void warn_stalled();
  void take_in_last_messages(Worker& w);
  void leave(Worker& w);
  void report_end(const Worker& w, const char* why);
  void release(Worker& w);
  bool all_done() const;
  // Checkpoints (lane_checkpoint.cc): starts a requested snapshot, or copies its next shard.
  bool snapshot_step();
  /// Before shard `shard` (of the lane) changes: copies it into a snapshot in progress.
  void preserve(uint32_t shard) {
    if (snapshot_active_ && !snapshot_copied_[shard]) copy_shard(shard);
  }
  void copy_shard(uint32_t shard);

  /// Lane-local float offset of shard `shard` (of the server) + `offset`.
  size_t local_of(uint32_t shard) const;

  LaneSetup setup_;
  math::UpdateParams update_;
  Range server_range_, lane_range_;
  SlotLayout slot_layout_;
  ReceiveLayout receive_layout_;
  std::unique_ptr<transport::Context> context_;  // destroyed after the endpoints and regions below
  std::unique_ptr<transport::Listener> listener_;
  uint16_t port_ = 0;
  std::unique_ptr<ShardStore> store_;
  bool direct_source_ = false;  // store_->direct_source(), fixed at construction: read by the control thread too
  size_t copy_bytes_ = 0;       // of a worker's copy of the lane's range
  std::vector<Worker> workers_;
  std::vector<uint32_t> owed_, owed_scratch_;  // workers_ indices whose mailbox waits (send_mailbox)
  std::unordered_map<const transport::Endpoint*, uint32_t> by_endpoint_;
  std::vector<uint64_t> versions_;  // of this lane's shards
  // The version each shard's optimizer state started at (0, or where a resume
  // began it empty): DC-ASGD-a's bias correction counts updates from there.
  std::vector<uint64_t> state_since_;
  uint64_t min_clock_ = 0;
  std::chrono::steady_clock::time_point min_clock_since_{};  // when min_clock_ last moved
  uint64_t holding_ = 0;                                     // Mailbox::holding as last sent
  bool landings_maybe_ = false;  // an active-message push may be landing: set as one lands, cleared once none is
  std::chrono::steady_clock::time_point holding_checked_{};
  std::chrono::steady_clock::time_point all_joined_at_{};  // warn_stalled(): when every worker had connected once
  uint32_t at_min_clock_ = 0;  // workers whose clock is min_clock_ (as update_min_clock() counts them)
  size_t liveness_next_ = 0;   // check_liveness() goes round the workers from here
  ClosingEndpoints closing_;
  // A departed worker's inbox, copy and writer, held while sends to it are
  // under way: over tcp without peer-failure handling, sends to a killed
  // worker never end, and held them until the server exited (a copy of the
  // range per such kill). Their pages go back after kDiscardAfter. Its inbox
  // stays mapped as long as its endpoint's close keeps it (a live worker's
  // puts may still land: Endpoint::close_later), its pages given back then too.
  struct Departed;
  struct Held {
    std::weak_ptr<Departed> what;  // expires as the sends that read it end
    std::shared_ptr<InboxReader> inbox;
    std::chrono::steady_clock::time_point since;
  };
  std::vector<Held> departed_;
  void discard_departed();
  std::vector<std::atomic<bool>> live_, reached_, admitting_, suspects_;
  std::atomic<bool> any_suspect_{false};
  std::vector<std::atomic<uint64_t>> forsaken_;  // by worker: forsake()'s window + 1, or 0
  std::atomic<bool> any_forsaken_{false};
  const std::string server_tag_;  // server_tag(): the lines lane 0 says for the server begin so
  const std::string tag_;         // and this lane's own lines: server_tag_ and the lane
  PendingPeers pending_;
  RefusalLog refusals_;  // a flood of bad LaneHellos must not flood the log
  // Nor a worker that sends NaNs every step (--check-nan), nor a hostile one.
  RefusalLog rejections_;  // named by lane: each lane's count of the lines past its limit looked alike
  LaneCounters counters_;
  LaneSnapshot snapshot_;
  std::atomic<uint64_t> snapshot_wanted_{0}, snapshot_taken_{0};
  bool snapshot_active_ = false;
  uint64_t snapshot_sequence_ = 0;     // of the snapshot in progress: what it is published as
  std::vector<bool> snapshot_copied_;  // by shard of the lane
  uint32_t snapshot_next_ = 0, snapshot_left_ = 0;
  std::atomic<bool> stop_{false}, failed_{false}, done_{false};
  std::string failure_;  // written by the lane's thread before failed_
  Errc failure_code_ = Errc::kInternal;
  std::thread thread_;
};

}  // namespace rdmaps::ps
