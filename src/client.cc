#include "rdmaps/client.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <unordered_map>

#include "rdmaps/error.h"
#include "src/am_ids.h"
#include "src/bf16.h"
#include "src/gpu_transfer.h"
#include "src/partition.h"
#include "src/protocol.h"
#include "transport/context.h"
#include "transport/idle_backoff.h"

namespace rdmaps {

using Clock = std::chrono::steady_clock;
using transport::Access;
using namespace ps;

namespace {
// Per slot: the header and the doorbell word, staged in registered memory.
constexpr size_t kStagingStride = 128;
}  // namespace

struct ServerLink {
  uint32_t index = 0;
  std::string address;
  std::unique_ptr<transport::Endpoint> ep;
  std::unique_ptr<transport::RemoteRegion> inbox;
  std::unique_ptr<transport::Region> receive;  // mailbox, versions, parameters: written by the server
  std::unique_ptr<transport::Region> staging;  // slot headers and doorbells
  Range range;
  uint32_t shards = 0, slots = 0;
  SlotLayout slot_layout{0};
  ReceiveLayout receive_layout{0, 0};
  bool use_am = false;
  uint64_t next_seq = 1;
  std::vector<uint64_t> shard_stamp;  // min clock when each shard was last pulled; 0 = never
  std::vector<bool> have_shard;
  // Active-message write-back: landings in flight and a mailbox waiting for them.
  std::vector<transport::Request> landings;
  std::optional<Mailbox> pending_mailbox;

  const Mailbox& mailbox() const { return *static_cast<const Mailbox*>(receive->data()); }
  uint64_t load(const uint64_t& field) const {
    return reinterpret_cast<const std::atomic<uint64_t>&>(field).load(std::memory_order_acquire);
  }
};

class ClientImpl {
 public:
  explicit ClientImpl(const ClientOptions& options) : options_(options), config_(options.config) {
    if (options.servers.empty()) throw Error(Errc::kInvalidArgument, "a client needs at least one server address");
  }
  ~ClientImpl();

  void declare(const std::string& name, size_t floats);
  void connect();
  void send(const std::string& name, std::span<const float> values, MsgType type);
  void pull(std::span<const PullTarget> targets);
  void clock(bool barrier);
  uint64_t clock_value() const { return clock_; }
  ClientStats stats() const { return stats_; }
  void set_learning_rate(float lr) {
    if (!(std::isfinite(lr) && lr >= 0))
      throw Error(Errc::kInvalidArgument, "learning rate " + std::to_string(lr) + ": needs a finite value >= 0");
    learning_rate_ = lr;
  }

 private:
  struct Piece {
    ServerLink* link;
    uint32_t shard;
    uint64_t base_version;
    uint32_t offset, length;
    size_t source;  // byte offset of the piece in the data sent
  };
  void send_staged(const std::vector<Piece>& pieces, const uint8_t* device_source, size_t elem, MsgType type,
                   uint16_t flags);
  GpuTransfer& gpu();
  void connect_one(uint32_t index);
  void on_write_back(transport::AmMessage& m);
  bool progress();  // true if anything moved
  /// Posts one inbox message; returns the requests that keep its buffers busy.
  uint64_t post(ServerLink& link, MsgType type, uint32_t shard, uint64_t base_version, uint32_t offset, uint32_t length,
                const void* payload, std::vector<transport::Request>& inflight, uint16_t flags = 0);
  template <typename Done>
  void wait(Done&& done, const std::string& what);
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
  std::unordered_map<const transport::Endpoint*, uint32_t> by_endpoint_;
  std::unique_ptr<Partition> partition_;
  uint64_t clock_ = 0;
  float learning_rate_ = 0;                   // 0: the servers' own
  std::vector<float> residual_;               // bf16 wire: rounding error not yet sent, by global float
  std::vector<uint16_t> wire_;                // bf16 wire: the tensor being pushed, encoded
  std::unique_ptr<GpuTransfer> gpu_;          // made at the first device pointer
  std::vector<Piece> pieces_;                 // send(): scratch kept across calls
  std::vector<transport::Request> inflight_;  // send(): scratch kept across calls
  ClientStats stats_;
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
  context_ = transport::create_context(o);
  context_->set_am_handler(kAmWriteBack, [this](transport::AmMessage& m) { on_write_back(m); });
  links_.resize(options_.servers.size());
  for (uint32_t i = 0; i < links_.size(); ++i) connect_one(i);
}

void ClientImpl::connect_one(uint32_t index) {
  ServerLink& link = links_[index];
  link.index = index;
  link.address = options_.servers[index];
  link.ep = context_->connect(transport::SockAddr::parse(link.address), options_.timeout);
  link.range = partition_->server_range(index);
  link.shards = partition_->shard_count(index);
  link.receive_layout = ReceiveLayout{link.shards, link.range.size()};
  // Registered once, remote-write for this server only.
  link.receive = context_->allocate(link.receive_layout.bytes(), Access::kRemoteWrite);
  std::memset(link.receive->data(), 0, link.receive->size());
  Hello hello;
  hello.worker = options_.worker;
  hello.secret_digest = secret_digest(config_.secret);
  hello.push_path = static_cast<uint32_t>(config_.push_path);
  hello.rule = RuleParams::from(config_);
  hello.tensors = declared_;
  hello.receive_region = link.receive->descriptor(Access::kRemoteWrite).serialize();
  link.ep->send_control(encode(hello), options_.timeout);
  Welcome welcome = decode_welcome(link.ep->recv_control(options_.timeout), link.address);
  if (!welcome.accepted)
    throw Error(Errc::kProtocol, "server " + link.address + " refused worker " + std::to_string(options_.worker) +
                                     ": " + welcome.reason);
  if (welcome.range_begin != link.range.begin || welcome.range_end != link.range.end ||
      welcome.shard_floats != config_.shard_floats)
    throw Error(Errc::kProtocol, "server " + link.address + " serves floats [" + std::to_string(welcome.range_begin) +
                                     ", " + std::to_string(welcome.range_end) + ") with shards of " +
                                     std::to_string(welcome.shard_floats) + ", this worker expected [" +
                                     std::to_string(link.range.begin) + ", " + std::to_string(link.range.end) +
                                     ") and " + std::to_string(config_.shard_floats) +
                                     ": check --servers order and --shard-floats on both sides");
  link.slots = welcome.inbox_slots;
  link.slot_layout = SlotLayout{config_.shard_floats * sizeof(float)};
  link.inbox = link.ep->import(transport::RegionDescriptor::parse(welcome.inbox_region, link.address));
  link.staging = context_->allocate(kStagingStride * link.slots, Access::kNone);
  link.use_am = config_.push_path == PushPath::kAm || (config_.push_path == PushPath::kAuto && !link.ep->rma_native());
  link.shard_stamp.assign(link.shards, 0);
  link.have_shard.assign(link.shards, false);
  clock_ = std::max(clock_, welcome.start_clock);
  by_endpoint_[link.ep.get()] = index;
  stats_.push_paths.push_back(link.use_am ? "am" : "put");
}

ClientImpl::~ClientImpl() {
  if (!partition_) return;
  for (auto& link : links_) {
    if (!link.ep || link.ep->peer_closed()) continue;
    try {
      std::vector<transport::Request> inflight;
      post(link, MsgType::kBye, 0, 0, 0, 0, nullptr, inflight);
      for (auto& r : inflight) r.wait_for(options_.timeout);
      link.ep->flush().wait_for(options_.timeout);
    } catch (const Error&) {
      // The server may already be gone; leaving is best effort.
    }
  }
  for (auto& link : links_) link.landings.clear();
}

void ClientImpl::on_write_back(transport::AmMessage& m) {
  auto it = by_endpoint_.find(m.from);
  if (it == by_endpoint_.end() || m.header_length != sizeof(WriteBackHeader)) return;
  ServerLink& link = links_[it->second];
  WriteBackHeader h;
  std::memcpy(&h, m.header, sizeof(h));
  if (h.mailbox) {
    link.pending_mailbox = h.box;
    return;
  }
  link.landings.push_back(context_->am_receive(m, *link.receive, h.offset));
}

// Progress, and publish a mailbox that arrived by active message once every
// payload sent before it has landed.
bool ClientImpl::progress() {
  bool moved = context_->progress() != 0;
  for (auto& link : links_) {
    if (!link.pending_mailbox) continue;
    std::erase_if(link.landings, [](transport::Request& r) { return r.test(); });
    if (!link.landings.empty()) continue;
    std::memcpy(link.receive->data(), &*link.pending_mailbox, sizeof(Mailbox));
    link.pending_mailbox.reset();
    moved = true;
  }
  return moved;
}

template <typename Done>
void ClientImpl::wait(Done&& done, const std::string& what) {
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
        if (link.ep->peer_closed())
          throw Error(Errc::kPeerGone, "server " + link.address + " closed the connection while worker " +
                                           std::to_string(options_.worker) + " was " + what);
    }
  }
}

uint64_t ClientImpl::post(ServerLink& link, MsgType type, uint32_t shard, uint64_t base_version, uint32_t offset,
                          uint32_t length, const void* payload, std::vector<transport::Request>& inflight,
                          uint16_t flags) {
  uint64_t seq = link.next_seq++;
  // Credits: a slot is reused only after the server consumed its last message.
  if (seq > link.load(link.mailbox().consumed_seq) + link.slots)
    wait([&] { return seq <= link.load(link.mailbox().consumed_seq) + link.slots; },
         "waiting for an inbox credit from server " + link.address);
  uint64_t slot = (seq - 1) % link.slots;
  auto* staged = static_cast<uint8_t*>(link.staging->data()) + slot * kStagingStride;
  SlotHeader h{};
  h.magic = kSlotMagic;
  h.type = static_cast<uint16_t>(type);
  h.flags = flags;
  h.worker = options_.worker;
  h.shard = shard;
  h.seq = seq;
  h.base_version = base_version;
  h.clock = clock_;
  h.offset = offset;
  h.length = length;
  if (type == MsgType::kPush) h.learning_rate = learning_rate_;
  std::memcpy(staged, &h, sizeof(h));
  size_t bytes = payload ? length * ((flags & kFlagBf16) ? sizeof(uint16_t) : sizeof(float)) : 0;
  if (link.use_am) {
    inflight.push_back(link.ep->am_send(kAmPush, staged, sizeof(h), payload, bytes, nullptr));
    return seq;
  }
  uint64_t base = slot * link.slot_layout.slot_bytes();
  if (bytes) inflight.push_back(link.ep->put(payload, bytes, *link.inbox, base + link.slot_layout.payload_offset()));
  inflight.push_back(link.ep->put(staged, sizeof(h), *link.inbox, base, link.staging.get()));
  // The doorbell is ordered behind the header and payload: the server never
  // sees it before they are visible.
  link.ep->fence();
  std::memcpy(staged + 64, &seq, 8);
  inflight.push_back(
      link.ep->put(staged + 64, 8, *link.inbox, base + link.slot_layout.doorbell_offset(), link.staging.get()));
  return seq;
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
    compress_bf16(values.data(), residual_.data() + t.begin, wire_.data(), values.size());
    source = wire_.data();
  }
  // One piece per shard the tensor touches, in server order.
  std::vector<Piece>& pieces = pieces_;  // reused: no allocation per push
  pieces.clear();
  for (auto& link : links_) {
    uint64_t begin = std::max(t.begin, link.range.begin), end = std::min(t.end, link.range.end);
    for (uint64_t pos = begin; pos < end;) {
      uint32_t shard = static_cast<uint32_t>((pos - link.range.begin) / config_.shard_floats);
      Range s = partition_->shard(link.index, shard);
      uint64_t piece_end = std::min(end, s.end);
      auto* versions = reinterpret_cast<const uint64_t*>(static_cast<uint8_t*>(link.receive->data()) +
                                                         link.receive_layout.versions_offset());
      pieces.push_back({&link, shard, versions[shard], static_cast<uint32_t>(pos - s.begin),
                        static_cast<uint32_t>(piece_end - pos), (pos - t.begin) * elem});
      pos = piece_end;
    }
  }
  const uint16_t flags = bf16 ? kFlagBf16 : 0;
  if (on_device && gpu_->path() == GpuPath::kStaged) {
    send_staged(pieces, static_cast<const uint8_t*>(source), elem, type, flags);
  } else {
    std::vector<transport::Request>& inflight = inflight_;
    inflight.clear();
    for (const Piece& p : pieces)
      post(*p.link, type, p.shard, p.base_version, p.offset, p.length, static_cast<const uint8_t*>(source) + p.source,
           inflight, flags);
    // Local completion: the caller's buffer may be reused after this returns.
    for (auto& r : inflight) r.wait_for(options_.timeout);
    inflight.clear();  // release the requests now; the vector keeps its capacity
  }
  if (type == MsgType::kPush) {
    stats_.pushes += pieces.size();
    stats_.push_bytes += values.size() * elem;
    if (on_device) stats_.gpu_path = gpu_path_name(gpu_->path());
  }
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
  for (size_t i = 0; i + 1 < static_cast<size_t>(depth) && i < pieces.size(); ++i) stage(i);
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (i + depth - 1 < pieces.size()) stage(i + depth - 1);
    const int k = static_cast<int>(i % depth);
    ring.wait(k);
    const Piece& p = pieces[i];
    post(*p.link, type, p.shard, p.base_version, p.offset, p.length, ring.buffer(k), busy[k], flags);
  }
  for (auto& requests : busy)
    for (auto& r : requests) r.wait_for(options_.timeout);
}

GpuTransfer& ClientImpl::gpu() {
  if (!gpu_) gpu_ = std::make_unique<GpuTransfer>(config_.shard_floats * sizeof(float), partition_->total_floats());
  return *gpu_;
}

void ClientImpl::pull(std::span<const PullTarget> targets) {
  require_connected("pull");
  std::vector<Range> ranges;
  ranges.reserve(targets.size());
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
  // One request per server covers every shard the targets touch there; all
  // requests are posted before any is waited for.
  struct Fetch {
    uint32_t first = UINT32_MAX, last = 0;
    size_t bytes = 0;
    uint64_t seq = 0;
  };
  std::vector<Fetch> fetch(links_.size());
  std::vector<transport::Request> inflight;
  for (auto& link : links_) {
    Fetch& f = fetch[link.index];
    bool fresh = may_skip;
    for (const Range& t : ranges) {
      uint64_t begin = std::max(t.begin, link.range.begin), end = std::min(t.end, link.range.end);
      if (begin >= end) continue;
      uint32_t first = static_cast<uint32_t>((begin - link.range.begin) / config_.shard_floats);
      uint32_t last = static_cast<uint32_t>((end - 1 - link.range.begin) / config_.shard_floats);
      f.first = std::min(f.first, first);
      f.last = std::max(f.last, last);
      f.bytes += (end - begin) * sizeof(float);
      for (uint32_t k = first; fresh && k <= last; ++k) fresh = link.have_shard[k] && link.shard_stamp[k] >= need;
    }
    if (f.bytes == 0) continue;
    if (fresh) {
      ++stats_.pulls_skipped;
      stats_.pull_bytes_saved += f.bytes;
    } else {
      f.seq = post(link, MsgType::kPull, f.first, 0, 0, f.last - f.first + 1, nullptr, inflight);
    }
  }
  for (auto& r : inflight) r.wait_for(options_.timeout);
  for (auto& link : links_) {
    const Fetch& f = fetch[link.index];
    if (f.seq == 0) continue;
    wait([&] { return link.load(link.mailbox().pull_done) >= f.seq; },
         "waiting for parameters from server " + link.address);
    uint64_t stamp = link.load(link.mailbox().pull_stamp);
    for (uint32_t k = f.first; k <= f.last; ++k) {
      link.shard_stamp[k] = stamp;
      link.have_shard[k] = true;
    }
    ++stats_.pulls;
    stats_.pull_bytes += f.bytes;
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    const Range& t = ranges[i];
    const bool on_device = cuda::is_device_pointer(targets[i].out.data());
    for (auto& link : links_) {
      uint64_t begin = std::max(t.begin, link.range.begin), end = std::min(t.end, link.range.end);
      if (begin >= end) continue;
      const auto* params = reinterpret_cast<const float*>(static_cast<uint8_t*>(link.receive->data()) +
                                                          link.receive_layout.params_offset());
      float* dst = targets[i].out.data() + (begin - t.begin);
      const float* src = params + (begin - link.range.begin);
      if (on_device)
        gpu().to_device(dst, src, (end - begin) * sizeof(float));
      else
        std::memcpy(dst, src, (end - begin) * sizeof(float));
    }
  }
}

void ClientImpl::clock(bool barrier) {
  require_connected("clock");
  ++clock_;
  ++stats_.clocks;
  std::vector<transport::Request> inflight;
  for (auto& link : links_) post(link, MsgType::kClock, 0, 0, 0, 0, nullptr, inflight);
  for (auto& r : inflight) r.wait_for(options_.timeout);
  const uint64_t s = barrier ? 0 : config_.staleness;
  if (s == kInfiniteStaleness || clock_ <= s) return;
  // SSP: iteration c+1 begins only once every live worker reached c - s.
  const uint64_t need = clock_ - s;
  auto start = Clock::now();
  for (auto& link : links_)
    wait([&] { return link.load(link.mailbox().min_clock) >= need; },
         "at clock " + std::to_string(clock_) + " waiting for the slowest worker to reach clock " +
             std::to_string(need) + " (server " + link.address + ")");
  stats_.clock_wait_seconds += std::chrono::duration<double>(Clock::now() - start).count();
}

Client::Client(const ClientOptions& options) : impl_(std::make_unique<ClientImpl>(options)) {}
Client::~Client() = default;
void Client::declare(const std::string& name, size_t floats) { impl_->declare(name, floats); }
void Client::connect() { impl_->connect(); }
void Client::init(const std::string& name, std::span<const float> values) { impl_->send(name, values, MsgType::kInit); }
void Client::push(const std::string& name, std::span<const float> gradient) {
  impl_->send(name, gradient, MsgType::kPush);
}
void Client::pull(const std::string& name, std::span<float> out) {
  const PullTarget one{name, out};
  impl_->pull(std::span<const PullTarget>(&one, 1));
}
void Client::pull(std::span<const PullTarget> targets) { impl_->pull(targets); }
void Client::clock() { impl_->clock(false); }
void Client::barrier() { impl_->clock(true); }
void Client::set_learning_rate(float lr) { impl_->set_learning_rate(lr); }
uint64_t Client::clock_value() const { return impl_->clock_value(); }
ClientStats Client::stats() const { return impl_->stats(); }

}  // namespace rdmaps
