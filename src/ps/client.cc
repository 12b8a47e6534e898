#include "rdmaps/client.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "math/bf16.h"
#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "src/metrics/http_endpoint.h"
#include "src/metrics/render.h"
#include "src/ps/am_ids.h"
#include "src/ps/gpu_transfer.h"
#include "src/ps/inbox.h"
#include "src/ps/partition.h"
#include "src/ps/protocol.h"
#include "src/ps/write_back.h"
#include "transport/context.h"
#include "transport/idle_backoff.h"

namespace rdmaps::ps {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
// How long a leaving worker waits for its Byes to be acknowledged.
constexpr std::chrono::milliseconds kLeaveTimeout = 5s;
using transport::Access;

// One thread of a server (docs/architecture.md "Server threads"): its own
// endpoint, this worker's inbox there, and the write-backs it sends.
struct Lane {
  uint32_t index = 0;
  uint32_t first_shard = 0, shards = 0;
  std::unique_ptr<transport::Endpoint> ep;
  std::unique_ptr<InboxWriter> inbox;
  WriteBackReceiver write_back;  // active-message path
  uint64_t clock_sent = 0;       // the last clock this lane was told
};

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
  uint32_t generation = 0;  // connections made after the first (the server restarted)
  uint64_t instance = 0;    // the server process connected to (Welcome::instance)
  uint64_t posted = 0;      // pushes (pieces) posted to it; a restart's checkpoint holds some of them

  bool down() const {
    if (lanes.empty()) return true;
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
  const uint64_t* versions() const {
    return reinterpret_cast<const uint64_t*>(static_cast<const uint8_t*>(receive->data()) +
                                             receive_layout.versions_offset());
  }
};

/// The part of `t` inside `r` (empty when begin >= end).
Range overlap(const Range& t, const Range& r) { return {std::max(t.begin, r.begin), std::min(t.end, r.end)}; }

class ClientImpl {
 public:
  explicit ClientImpl(const ClientOptions& options) : options_(options), config_(options.config) {
    if (options.servers.empty()) throw Error(Errc::kInvalidArgument, "a client needs at least one server address");
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
  void clock(bool barrier);
  uint64_t clock_value() const { return clock_; }
  ClientStats stats() const { return stats_; }
  std::string metrics_address() const { return metrics_ ? metrics_->address() : ""; }
  /// After each call: the copy a scrape reads, so that it never reads
  /// stats_ while the caller's thread changes it. Assignment reuses the
  /// copy's storage: no allocation once push_paths has its size.
  void publish() {
    if (!metrics_) return;
    std::lock_guard<std::mutex> lock(published_mu_);
    published_ = stats_;
    published_clock_ = clock_;
  }
  void set_learning_rate(float lr) {
    if (!(std::isfinite(lr) && lr >= 0))
      throw Error(Errc::kInvalidArgument, "learning rate " + std::to_string(lr) + ": needs a finite value >= 0");
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
  void send_staged(const std::vector<Piece>& pieces, const uint8_t* device_source, size_t elem, MsgType type,
                   uint16_t flags);
  GpuTransfer& gpu();
  Welcome connect_one(uint32_t index);
  void pull_once(std::span<const PullTarget> targets);
  // Server restarts (Config::reconnect_ms, docs/cluster.md "Checkpoints").
  /// After `cause` interrupted an operation: lets `inflight` finish or fail,
  /// then reconnects every server that closed; rethrows `cause` if none did
  /// or reconnecting is off, throws if a server does not come back in time.
  void recover(const Error& cause, std::vector<transport::Request>& inflight);
  void reconnect(ServerLink& link, const Error& cause);
  void disconnect(ServerLink& link);
  /// Pulls every shard of `link` into the receive region: the server's DC
  /// backups of this worker start from what it holds now.
  void refetch(ServerLink& link);
  void on_write_back(transport::AmMessage& m);
  bool progress();  // true if anything moved
  /// Posts one message into this worker's inbox on `lane`, once it has a
  /// credit; `inflight` gets the requests that keep its buffers busy.
  uint64_t post(ServerLink& link, Lane& lane, MsgType type, uint32_t shard, uint64_t base_version, uint32_t offset,
                uint32_t length, const void* payload, std::vector<transport::Request>& inflight, uint16_t flags = 0);
  /// Waits until `lane` wrote back the pull numbered `seq`, then marks shards
  /// [first, last] of `link` as fetched (when and at which clock).
  void await_pull(ServerLink& link, const Lane& lane, uint64_t seq, uint32_t first, uint32_t last,
                  const ServerLink* only = nullptr);
  /// Polls until done(); throws on timeout or when a server closed (only
  /// `link`'s, when given).
  template <typename Done>
  void wait(Done&& done, const std::string& what, const ServerLink* link = nullptr);
  void require_connected(const char* op) const {
    if (!partition_) throw Error(Errc::kInvalidArgument, std::string(op) + " before connect()");
  }
  void check_size(const std::string& name, const Range& r, size_t given, const char* op) const {
    if (given != r.size())
      throw Error(Errc::kInvalidArgument, std::string(op) + " of '" + name + "': " + std::to_string(given) +
                                              " floats given, the tensor was declared with " +
                                              std::to_string(r.size()));
  }

  ClientOptions options_;
  Config config_;
  std::vector<TensorDecl> declared_;
  std::unique_ptr<transport::Context> context_;
  std::vector<ServerLink> links_;
  std::unordered_map<const transport::Endpoint*, std::pair<uint32_t, uint32_t>> by_endpoint_;  // link, lane
  std::unique_ptr<Partition> partition_;
  uint64_t clock_ = 0;
  float learning_rate_ = 0;                  // 0: the servers' own
  std::vector<float> residual_;              // bf16 wire: rounding error not yet sent, by global float
  std::vector<uint16_t> wire_;               // bf16 wire: the tensor being pushed, encoded
  std::unique_ptr<GpuTransfer> gpu_;         // made at the first device pointer
  std::vector<Piece> pieces_, interleaved_;  // send(): scratch kept across calls
  std::vector<size_t> runs_;                 // send(): scratch kept across calls
  // pull(): one request per lane, and the targets' ranges; scratch kept across calls.
  struct Fetch {
    ServerLink* link;
    Lane* lane;
    uint32_t first = UINT32_MAX, last = 0;
    size_t bytes = 0;
    uint64_t seq = 0;
  };
  std::vector<Fetch> fetch_;
  std::vector<Range> ranges_;
  std::vector<transport::Request> inflight_;  // send(): scratch kept across calls
  ClientStats stats_;
  Clock::time_point last_clock_call_{};
  std::mutex published_mu_;
  ClientStats published_;
  uint64_t published_clock_ = 0;
  std::unique_ptr<metrics::HttpEndpoint> metrics_;  // last: stopped before what it reads goes
};

void ClientImpl::declare(const std::string& name, size_t floats) {
  if (partition_) throw Error(Errc::kInvalidArgument, "declare('" + name + "') after connect()");
  if (name.empty() || floats == 0)
    throw Error(Errc::kInvalidArgument, "declare: a tensor needs a name and at least one float");
  for (const auto& t : declared_)
    if (t.name == name) throw Error(Errc::kInvalidArgument, "tensor '" + name + "' declared twice");
  declared_.push_back({name, floats});
}

void ClientImpl::connect() {
  if (partition_) return;
  if (declared_.empty()) throw Error(Errc::kInvalidArgument, "connect() with no tensor declared");
  partition_ =
      std::make_unique<Partition>(declared_, static_cast<uint32_t>(options_.servers.size()), config_.shard_floats);
  transport::ContextOptions o;
  o.transport = transport::parse_transport(config_.transport);
  o.name = "rdmaps-worker-" + std::to_string(options_.worker);
  o.secret = config_.secret;
  context_ = transport::create_context(o);
  context_->set_am_handler(kAmWriteBack, [this](transport::AmMessage& m) { on_write_back(m); });
  links_.resize(options_.servers.size());
  for (uint32_t i = 0; i < links_.size(); ++i) {
    const Welcome w = connect_one(i);
    links_[i].instance = w.instance;
    stats_.push_paths.push_back(links_[i].use_am ? "am" : "put");
    stats_.servers_resumed += w.resumed;
  }
}

// The server's control thread admits this worker and names its lanes; the
// worker then connects to each lane, handing it the receive region.
Welcome ClientImpl::connect_one(uint32_t index) {
  ServerLink& link = links_[index];
  link.index = index;
  link.address = options_.servers[index];
  auto control = context_->connect(transport::SockAddr::parse(link.address), options_.timeout);
  link.range = partition_->server_range(index);
  link.shards = partition_->shard_count(index);
  Hello hello;
  hello.worker = options_.worker;
  hello.workers = options_.workers;
  hello.staleness = config_.staleness;
  hello.push_path = static_cast<uint32_t>(config_.push_path);
  hello.rule = RuleParams::from(config_);
  hello.rule_stated = config_.rule_stated ? 1 : 0;
  hello.tensors = declared_;
  control->send_control(encode(hello), options_.timeout);
  Welcome welcome = decode_welcome(control->recv_control(options_.timeout), link.address);
  if (!welcome.accepted)
    throw Error(Errc::kProtocol, "server " + link.address + " refused worker " + std::to_string(options_.worker) +
                                     ": " + welcome.reason);
  if (welcome.range_begin != link.range.begin || welcome.range_end != link.range.end ||
      welcome.shard_floats != config_.shard_floats ||
      welcome.lanes.back().first_shard + welcome.lanes.back().shards != link.shards)
    throw Error(Errc::kProtocol, "server " + link.address + " serves floats [" + std::to_string(welcome.range_begin) +
                                     ", " + std::to_string(welcome.range_end) + ") with shards of " +
                                     std::to_string(welcome.shard_floats) + ", this worker expected [" +
                                     std::to_string(link.range.begin) + ", " + std::to_string(link.range.end) +
                                     ") and " + std::to_string(config_.shard_floats) +
                                     ": check --servers order and --shard-floats on both sides");
  link.use_am = welcome.push_path == static_cast<uint32_t>(PushPath::kAm);
  link.receive_layout = ReceiveLayout{welcome.lanes.size(), link.shards, link.range.size()};
  // Registered once, remote-write for this server's lanes only.
  link.receive = context_->allocate(link.receive_layout.bytes(), Access::kRemoteWrite);
  std::memset(link.receive->data(), 0, link.receive->size());
  LaneHello lane_hello;
  lane_hello.worker = options_.worker;
  lane_hello.token = welcome.token;
  lane_hello.clock = clock_;
  lane_hello.receive_region = link.receive->descriptor(Access::kRemoteWrite).serialize();
  const auto host = transport::SockAddr::parse(link.address);
  link.lanes.resize(welcome.lanes.size());
  link.lane_of.assign(link.shards, 0);
  for (uint32_t l = 0; l < welcome.lanes.size(); ++l) {
    Lane& lane = link.lanes[l];
    const LaneInfo& info = welcome.lanes[l];
    lane.index = l;
    lane.first_shard = info.first_shard;
    lane.shards = info.shards;
    const std::string where = link.address + " lane " + std::to_string(l);
    const auto lane_address = host.with_port(static_cast<uint16_t>(info.port));
    lane.ep = context_->connect(lane_address, options_.timeout, where + " (" + lane_address.to_string() + ")");
    lane.ep->send_control(encode(lane_hello), options_.timeout);
    LaneWelcome lw = decode_lane_welcome(lane.ep->recv_control(options_.timeout), where);
    if (!lw.accepted)
      throw Error(Errc::kProtocol,
                  "server " + where + " refused worker " + std::to_string(options_.worker) + ": " + lw.reason);
    auto inbox = lane.ep->import(transport::RegionDescriptor::parse(lw.inbox_region, where));
    lane.inbox = std::make_unique<InboxWriter>(*context_, *lane.ep, std::move(inbox),
                                               SlotLayout{config_.shard_floats * sizeof(float)}, welcome.inbox_slots,
                                               link.use_am);
    clock_ = std::max(clock_, lw.start_clock);
    lane.clock_sent = clock_;
    by_endpoint_[lane.ep.get()] = {index, l};
    for (uint32_t k = 0; k < info.shards; ++k) link.lane_of[info.first_shard + k] = l;
  }
  link.shard_stamp.assign(link.shards, 0);
  link.have_shard.assign(link.shards, false);
  return welcome;
}

void ClientImpl::recover(const Error& cause, std::vector<transport::Request>& inflight) {
  for (auto& r : inflight) {
    try {
      r.wait_for(options_.timeout);
    } catch (const Error&) {
      // Sent to a server that closed: what it took in is the checkpoint's business now.
    }
  }
  inflight.clear();
  bool any = false;
  for (auto& link : links_) {
    if (!link.down()) continue;
    if (config_.reconnect_ms == 0) throw cause;
    reconnect(link, cause);
    any = true;
  }
  if (!any) throw cause;
}

void ClientImpl::disconnect(ServerLink& link) {
  for (auto& lane : link.lanes) {
    lane.write_back.clear();
    by_endpoint_.erase(lane.ep.get());
  }
  link.lanes.clear();  // endpoints close before the region they wrote into goes
  link.receive.reset();
}

void ClientImpl::reconnect(ServerLink& link, const Error& cause) {
  const auto start = Clock::now(), deadline = start + std::chrono::milliseconds(config_.reconnect_ms);
  logf(LogLevel::kWarn, "rdmaps worker %u: %s; reconnecting to %s for up to %.0f s", options_.worker, cause.what(),
       link.address.c_str(), config_.reconnect_ms / 1000.0);
  std::string last;
  Welcome welcome;
  for (auto pause = std::chrono::milliseconds(50);; pause = std::min(pause * 2, std::chrono::milliseconds(1000))) {
    disconnect(link);
    welcome = Welcome{};
    // The same server (a dropped connection), or a restarted one that resumed: go on.
    auto holds_the_job = [&] { return welcome.instance == link.instance || welcome.resumed; };
    try {
      welcome = connect_one(link.index);
      if (holds_the_job()) {
        refetch(link);
        break;
      }
    } catch (const Error& e) {
      last = e.what();
    }
    if (welcome.accepted && !holds_the_job())
      throw Error(Errc::kPeerGone, "server " + link.address +
                                       " came back without this job's parameters (it did not resume from a "
                                       "checkpoint: start it with --checkpoint-dir and --resume); worker " +
                                       std::to_string(options_.worker) + " stops rather than train from nothing");
    if (Clock::now() + pause > deadline)
      throw Error(Errc::kPeerGone, "worker " + std::to_string(options_.worker) + ": server " + link.address +
                                       " did not come back within " + std::to_string(config_.reconnect_ms / 1000) +
                                       " s (--reconnect; last attempt: " + last + ")");
    std::this_thread::sleep_for(pause);
  }
  ++link.generation;
  const bool restarted = welcome.instance != link.instance;
  link.instance = welcome.instance;
  const uint64_t lost = link.posted > welcome.pushes_held ? link.posted - welcome.pushes_held : 0;
  logf(LogLevel::kInfo,
       "rdmaps worker %u: reconnected to %s after %.1f s; %s holding %llu of the %llu pushes this worker "
       "sent it (%llu lost)",
       options_.worker, link.address.c_str(), std::chrono::duration<double>(Clock::now() - start).count(),
       restarted ? "it resumed from a checkpoint" : "the same server process, still",
       static_cast<unsigned long long>(welcome.pushes_held), static_cast<unsigned long long>(link.posted),
       static_cast<unsigned long long>(lost));
  stats_.pushes_lost += lost;
  link.posted = welcome.pushes_held;
  ++stats_.reconnects;
  stats_.push_paths[link.index] = link.use_am ? "am" : "put";
}

void ClientImpl::refetch(ServerLink& link) {
  std::vector<transport::Request> inflight;
  std::vector<uint64_t> seqs;
  for (auto& lane : link.lanes)
    seqs.push_back(post(link, lane, MsgType::kPull, lane.first_shard, 0, 0, lane.shards, nullptr, inflight));
  for (auto& r : inflight) r.wait_for(options_.timeout);
  for (size_t l = 0; l < link.lanes.size(); ++l) {
    const Lane& lane = link.lanes[l];
    await_pull(link, lane, seqs[l], lane.first_shard, lane.first_shard + lane.shards - 1, &link);
  }
}

void ClientImpl::await_pull(ServerLink& link, const Lane& lane, uint64_t seq, uint32_t first, uint32_t last,
                            const ServerLink* only) {
  const Mailbox& box = link.mailbox(lane);
  wait([&] { return link.load(box.pull_done) >= seq; },
       "waiting for parameters from server " + link.address + " lane " + std::to_string(lane.index), only);
  const uint64_t stamp = link.load(box.pull_stamp);
  for (uint32_t k = first; k <= last; ++k) {
    link.shard_stamp[k] = stamp;
    link.have_shard[k] = true;
  }
}

// Leaving: a Bye on every lane, then a wait until each lane acknowledged it
// (its consumed sequence reached the Bye) before the endpoints close. Closing
// first could reset a tcp connection while the lane still reads the last
// pushes, and the reset discards them (docs/protocol.md "Dead and leaving workers").
ClientImpl::~ClientImpl() {
  if (!partition_) return;
  struct Bye {
    ServerLink* link;
    Lane* lane;
    uint64_t seq;
  };
  std::vector<Bye> byes;
  for (auto& link : links_)
    for (auto& lane : link.lanes) {
      if (!lane.ep || lane.ep->peer_closed()) continue;
      try {
        std::vector<transport::Request> inflight;
        const uint64_t seq = post(link, lane, MsgType::kBye, 0, 0, 0, 0, nullptr, inflight);
        for (auto& r : inflight) r.wait_for(options_.timeout);
        byes.push_back({&link, &lane, seq});
      } catch (const Error&) {
        // The server may already be gone; leaving is best effort.
      }
    }
  const auto deadline = Clock::now() + std::min<std::chrono::milliseconds>(options_.timeout, kLeaveTimeout);
  transport::IdleBackoff idle;
  try {
    for (bool waiting = !byes.empty(); waiting && Clock::now() < deadline;) {
      idle.pause(progress());
      waiting = false;
      for (const Bye& b : byes)
        if (b.link->load(b.link->mailbox(*b.lane).consumed_seq) < b.seq && !b.lane->ep->peer_closed() &&
            !b.lane->ep->failed())
          waiting = true;
    }
  } catch (const Error&) {
    // A server failed while we left: nothing more to wait for there.
  }
  for (auto& link : links_)
    for (auto& lane : link.lanes) lane.write_back.clear();
}

void ClientImpl::on_write_back(transport::AmMessage& m) {
  auto it = by_endpoint_.find(m.from);
  if (it == by_endpoint_.end()) return;
  ServerLink& link = links_[it->second.first];
  link.lanes[it->second.second].write_back.on_message(*context_, m, *link.receive);
}

// Progress, and publish a mailbox that arrived by active message once every
// payload sent before it has landed.
bool ClientImpl::progress() {
  bool moved = context_->progress() != 0;
  for (auto& link : links_)
    if (link.use_am)
      for (auto& lane : link.lanes) moved |= lane.write_back.publish(*link.receive);
  return moved;
}

template <typename Done>
void ClientImpl::wait(Done&& done, const std::string& what, const ServerLink* only) {
  auto deadline = Clock::now() + options_.timeout;
  uint32_t spins = 0;
  transport::IdleBackoff idle;  // a long wait (the clock bound) must not take the core of the one it waits for
  while (!done()) {
    idle.pause(progress());
    if ((++spins & 0x3ff) == 0) {
      if (Clock::now() > deadline)
        throw Error(Errc::kTimeout, "worker " + std::to_string(options_.worker) + ": " + what + " for " +
                                        std::to_string(options_.timeout.count()) + " ms");
      for (auto& link : links_)
        for (auto& lane : link.lanes)
          if ((!only || only == &link) && lane.ep->peer_closed())
            throw Error(Errc::kPeerGone, "server " + link.address + " closed the connection while worker " +
                                             std::to_string(options_.worker) + " was " + what);
    }
  }
}

uint64_t ClientImpl::post(ServerLink& link, Lane& lane, MsgType type, uint32_t shard, uint64_t base_version,
                          uint32_t offset, uint32_t length, const void* payload,
                          std::vector<transport::Request>& inflight, uint16_t flags) {
  // Credits: a slot is reused only after the lane consumed its last message.
  if (!lane.inbox->has_credit(link.load(link.mailbox(lane).consumed_seq)))
    wait([&] { return lane.inbox->has_credit(link.load(link.mailbox(lane).consumed_seq)); },
         "waiting for an inbox credit from server " + link.address + " lane " + std::to_string(lane.index));
  SlotHeader h{};
  h.magic = kSlotMagic;
  h.type = static_cast<uint16_t>(type);
  h.flags = flags;
  h.worker = options_.worker;
  h.shard = shard;
  h.base_version = base_version;
  h.clock = clock_;
  h.offset = offset;
  h.length = length;
  if (type == MsgType::kPush) h.learning_rate = learning_rate_;
  const size_t bytes = payload ? length * ((flags & kFlagBf16) ? sizeof(uint16_t) : sizeof(float)) : 0;
  return lane.inbox->post(h, payload, bytes, inflight);
}

void ClientImpl::send(const std::string& name, std::span<const float> values, MsgType type) {
  require_connected(type == MsgType::kPush ? "push" : "init");
  Range t = partition_->tensor(name);
  check_size(name, t, values.size(), type == MsgType::kPush ? "push" : "init");
  const bool bf16 = type == MsgType::kPush && config_.wire == WireFormat::kBf16;
  const bool on_device = cuda::is_device_pointer(values.data());
  const size_t elem = bf16 ? sizeof(uint16_t) : sizeof(float);
  const void* source = values.data();
  if (on_device) {
    source = gpu().prepare(values.data(), t.begin, values.size(), bf16);
  } else if (bf16) {
    if (residual_.empty()) residual_.assign(partition_->total_floats(), 0.0f);
    wire_.resize(std::max(wire_.size(), values.size()));
    math::compress_bf16(values.data(), residual_.data() + t.begin, wire_.data(), values.size());
    source = wire_.data();
  }
  // One piece per shard the tensor touches, in server order.
  std::vector<Piece>& pieces = pieces_;  // reused: no allocation per push
  pieces.clear();
  for (auto& link : links_) {
    const Range held = overlap(t, link.range);
    for (uint64_t pos = held.begin; pos < held.end;) {
      uint32_t shard = static_cast<uint32_t>((pos - link.range.begin) / config_.shard_floats);
      Range s = partition_->shard(link.index, shard);
      uint64_t piece_end = std::min(held.end, s.end);
      pieces.push_back({&link, &link.lanes[link.lane_of[shard]], link.generation, shard, link.versions()[shard],
                        static_cast<uint32_t>(pos - s.begin), static_cast<uint32_t>(piece_end - pos),
                        (pos - t.begin) * elem});
      pos = piece_end;
    }
  }
  interleave_lanes(pieces);
  const uint16_t flags = bf16 ? kFlagBf16 : 0;
  if (on_device && gpu_->path() == GpuPath::kStaged) {
    send_staged(pieces, static_cast<const uint8_t*>(source), elem, type, flags);
  } else {
    std::vector<transport::Request>& inflight = inflight_;
    inflight.clear();
    for (size_t i = 0; i < pieces.size();) {
      const Piece& p = pieces[i];
      if (p.generation != p.link->generation) {  // its server restarted during this push
        if (type == MsgType::kPush) ++stats_.pushes_lost;
        ++i;
        continue;
      }
      try {
        post(*p.link, *p.lane, type, p.shard, p.base_version, p.offset, p.length,
             static_cast<const uint8_t*>(source) + p.source, inflight, flags);
        if (type == MsgType::kPush) ++p.link->posted;
        ++i;
      } catch (const Error& e) {
        recover(e, inflight);  // then this piece again, unless its server was the one that restarted
      }
    }
    // Local completion: the caller's buffer may be reused after this returns.
    try {
      for (auto& r : inflight) r.wait_for(options_.timeout);
    } catch (const Error& e) {
      recover(e, inflight);
    }
    inflight.clear();  // release the requests now; the vector keeps its capacity
  }
  if (type == MsgType::kPush) {
    stats_.pushes += pieces.size();
    stats_.push_bytes += values.size() * elem;
    if (on_device) stats_.gpu_path = gpu_path_name(gpu_->path());
  }
}

void ClientImpl::interleave_lanes(std::vector<Piece>& pieces) {
  runs_.clear();
  for (size_t i = 0; i < pieces.size(); ++i)
    if (i == 0 || pieces[i].lane != pieces[i - 1].lane) runs_.push_back(i);
  if (runs_.size() < 2) return;
  runs_.push_back(pieces.size());
  interleaved_.clear();
  for (size_t k = 0; interleaved_.size() < pieces.size(); ++k)
    for (size_t r = 0; r + 1 < runs_.size(); ++r)
      if (runs_[r] + k < runs_[r + 1]) interleaved_.push_back(pieces[runs_[r] + k]);
  pieces.swap(interleaved_);
}

// Device memory UCX cannot read: chunk k+1 and k+2 are copied to pinned
// buffers while chunk k is sent; a buffer is refilled once its send completed.
void ClientImpl::send_staged(const std::vector<Piece>& pieces, const uint8_t* device_source, size_t elem, MsgType type,
                             uint16_t flags) {
  cuda::StagingRing& ring = gpu_->ring();
  const int depth = ring.depth();
  std::vector<std::vector<transport::Request>> busy(static_cast<size_t>(depth));
  auto stage = [&](size_t i) {
    auto& requests = busy[i % depth];
    for (auto& r : requests) r.wait_for(options_.timeout);
    requests.clear();
    ring.copy_from_device(static_cast<int>(i % depth), device_source + pieces[i].source, pieces[i].length * elem);
  };
  size_t i = 0;
  try {
    for (; i + 1 < static_cast<size_t>(depth) && i < pieces.size(); ++i) stage(i);
    for (i = 0; i < pieces.size(); ++i) {
      if (i + depth - 1 < pieces.size()) stage(i + depth - 1);
      const int k = static_cast<int>(i % depth);
      // Not cudaEventSynchronize: over tcp the sends already posted move only
      // while this thread drives the worker's progress.
      while (!ring.ready(k)) context_->progress();
      const Piece& p = pieces[i];
      post(*p.link, *p.lane, type, p.shard, p.base_version, p.offset, p.length, ring.buffer(k), busy[k], flags);
      if (type == MsgType::kPush) ++p.link->posted;
    }
    for (auto& requests : busy)
      for (auto& r : requests) r.wait_for(options_.timeout);
  } catch (const Error& e) {
    // A server restarted: the pieces not yet sent of this gradient are dropped for every server.
    std::vector<transport::Request> all;
    for (auto& requests : busy)
      for (auto& r : requests) all.push_back(std::move(r));
    recover(e, all);
    if (type == MsgType::kPush) stats_.pushes_lost += pieces.size() - std::min(i, pieces.size());
  }
}

GpuTransfer& ClientImpl::gpu() {
  if (!gpu_)
    gpu_ = std::make_unique<GpuTransfer>(context_->memory_support(), config_.shard_floats * sizeof(float),
                                         partition_->total_floats(), config_.staging_depth);
  return *gpu_;
}

void ClientImpl::pull(std::span<const PullTarget> targets) {
  require_connected("pull");
  for (;;) {
    try {
      return pull_once(targets);
    } catch (const Error& e) {
      recover(e, inflight_);  // then pull again: a pull is safe to repeat
    }
  }
}

void ClientImpl::pull_once(std::span<const PullTarget> targets) {
  std::vector<Range>& ranges = ranges_;  // scratch kept across calls: no allocation per step
  ranges.clear();
  for (const auto& t : targets) {
    ranges.push_back(partition_->tensor(t.name));
    check_size(t.name, ranges.back(), t.out.size(), "pull");
  }
  // By default every pull fetches, as async does (ESSP's eager refresh: the
  // bound only holds the fastest back). With skip_pulls, SSP skips while the
  // cache holds every update from clocks <= c - s - 1, i.e. was copied when the
  // slowest worker had reached c - s.
  const bool may_skip = config_.skip_pulls && config_.staleness != kInfiniteStaleness;
  const uint64_t need = !may_skip || clock_ < config_.staleness ? 0 : clock_ - config_.staleness;
  // One request per lane covers every shard of it the targets touch; all
  // requests are posted before any is waited for.
  std::vector<Fetch>& fetch = fetch_;
  fetch.clear();
  for (auto& link : links_)
    for (auto& lane : link.lanes) fetch.push_back({&link, &lane});
  size_t base = 0;
  std::vector<transport::Request>& inflight = inflight_;
  inflight.clear();
  for (auto& link : links_) {
    for (const Range& t : ranges) {
      const Range held = overlap(t, link.range);
      for (uint64_t pos = held.begin; pos < held.end;) {  // lane by lane
        const uint32_t shard = static_cast<uint32_t>((pos - link.range.begin) / config_.shard_floats);
        const Lane& lane = link.lanes[link.lane_of[shard]];
        const uint64_t lane_end = partition_->shard(link.index, lane.first_shard + lane.shards - 1).end;
        const uint64_t end = std::min(held.end, lane_end);
        Fetch& f = fetch[base + lane.index];
        f.first = std::min(f.first, shard);
        f.last = std::max(f.last, static_cast<uint32_t>((end - 1 - link.range.begin) / config_.shard_floats));
        f.bytes += (end - pos) * sizeof(float);
        pos = end;
      }
    }
    base += link.lanes.size();
  }
  for (Fetch& f : fetch) {
    if (f.bytes == 0) continue;
    bool fresh = may_skip;
    for (uint32_t k = f.first; fresh && k <= f.last; ++k)
      fresh = f.link->have_shard[k] && f.link->shard_stamp[k] >= need;
    if (fresh) {
      ++stats_.pulls_skipped;
      stats_.pull_bytes_saved += f.bytes;
    } else {
      f.seq = post(*f.link, *f.lane, MsgType::kPull, f.first, 0, 0, f.last - f.first + 1, nullptr, inflight);
    }
  }
  for (auto& r : inflight) r.wait_for(options_.timeout);
  inflight.clear();
  for (const Fetch& f : fetch) {
    if (f.seq == 0) continue;
    await_pull(*f.link, *f.lane, f.seq, f.first, f.last);
    ++stats_.pulls;
    stats_.pull_bytes += f.bytes;
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    const Range& t = ranges[i];
    const bool on_device = cuda::is_device_pointer(targets[i].out.data());
    for (auto& link : links_) {
      const Range held = overlap(t, link.range);
      if (held.begin >= held.end) continue;
      const auto* params = reinterpret_cast<const float*>(static_cast<uint8_t*>(link.receive->data()) +
                                                          link.receive_layout.params_offset());
      float* dst = targets[i].out.data() + (held.begin - t.begin);
      const float* src = params + (held.begin - link.range.begin);
      if (on_device)
        gpu().to_device(dst, src, held.size() * sizeof(float));
      else
        std::memcpy(dst, src, held.size() * sizeof(float));
    }
  }
}

void ClientImpl::clock(bool barrier) {
  require_connected("clock");
  const auto now = Clock::now();
  if (stats_.clocks) stats_.last_step_seconds = std::chrono::duration<double>(now - last_clock_call_).count();
  last_clock_call_ = now;
  ++clock_;
  ++stats_.clocks;
  std::vector<transport::Request>& inflight = inflight_;
  for (;;) {
    try {
      // Every lane gets the clock, behind this worker's pushes to it (a lane
      // reconnected after its server restarted was told it when connecting).
      inflight.clear();
      for (auto& link : links_)
        for (auto& lane : link.lanes)
          if (lane.clock_sent < clock_) {
            post(link, lane, MsgType::kClock, 0, 0, 0, 0, nullptr, inflight);
            lane.clock_sent = clock_;
          }
      for (auto& r : inflight) r.wait_for(options_.timeout);
      inflight.clear();
      const uint64_t s = barrier ? 0 : config_.staleness;
      if (s == kInfiniteStaleness || clock_ <= s) return;
      // SSP: iteration c+1 begins only once every live worker reached c - s, as every lane saw it.
      const uint64_t need = clock_ - s;
      auto start = Clock::now();
      for (auto& link : links_)
        for (auto& lane : link.lanes)
          wait([&] { return link.load(link.mailbox(lane).min_clock) >= need; },
               "at clock " + std::to_string(clock_) + " waiting for the slowest worker to reach clock " +
                   std::to_string(need) + " (server " + link.address + " lane " + std::to_string(lane.index) + ")");
      stats_.clock_wait_seconds += std::chrono::duration<double>(Clock::now() - start).count();
      return;
    } catch (const Error& e) {
      recover(e, inflight);
    }
  }
}

}  // namespace rdmaps::ps

// The public Client forwards to its implementation.
namespace rdmaps {

using ps::ClientImpl;
using ps::MsgType;

namespace {
// Publishes the stats for the metrics endpoint when a call returns or throws.
struct Published {
  ClientImpl& impl;
  ~Published() { impl.publish(); }
};
}  // namespace

Client::Client(const ClientOptions& options) : impl_(std::make_unique<ClientImpl>(options)) {}
Client::~Client() = default;
void Client::declare(const std::string& name, size_t floats) { impl_->declare(name, floats); }
void Client::connect() {
  Published p{*impl_};
  impl_->connect();
}
void Client::init(const std::string& name, std::span<const float> values) {
  Published p{*impl_};
  impl_->send(name, values, MsgType::kInit);
}
void Client::push(const std::string& name, std::span<const float> gradient) {
  Published p{*impl_};
  impl_->send(name, gradient, MsgType::kPush);
}
void Client::pull(const std::string& name, std::span<float> out) {
  Published p{*impl_};
  const PullTarget one{name, out};
  impl_->pull(std::span<const PullTarget>(&one, 1));
}
void Client::pull(std::span<const PullTarget> targets) {
  Published p{*impl_};
  impl_->pull(targets);
}
void Client::clock() {
  Published p{*impl_};
  impl_->clock(false);
}
void Client::barrier() {
  Published p{*impl_};
  impl_->clock(true);
}
void Client::set_learning_rate(float lr) { impl_->set_learning_rate(lr); }
uint64_t Client::clock_value() const { return impl_->clock_value(); }
ClientStats Client::stats() const { return impl_->stats(); }
std::string Client::metrics_address() const { return impl_->metrics_address(); }

}  // namespace rdmaps
