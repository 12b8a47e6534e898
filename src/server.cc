#include "rdmaps/server.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "cuda/gpu_probe.h"
#include "rdmaps/error.h"
#include "src/am_ids.h"
#include "src/apply_pool.h"
#include "src/bf16.h"
#include "src/flush_denormals.h"
#include "src/gpu_shard.h"
#include "src/partition.h"
#include "src/protocol.h"
#include "src/update_rules.h"
#include "transport/context.h"
#include "transport/idle_backoff.h"

namespace rdmaps {

double ServerStats::staleness_quantile(double q) const {
  uint64_t total = 0;
  for (uint64_t c : staleness) total += c;
  if (total == 0) return 0;
  uint64_t target = static_cast<uint64_t>(std::ceil(q * total)), seen = 0;
  for (size_t tau = 0; tau < staleness.size(); ++tau) {
    seen += staleness[tau];
    if (seen >= target) return static_cast<double>(tau);
  }
  return static_cast<double>(staleness.size() - 1);
}

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using transport::Access;
using namespace ps;

namespace {
constexpr size_t kStalenessBuckets = 257;
constexpr auto kHandshakeTimeout = 10s;
constexpr auto kIoTimeout = 30s;

transport::ContextOptions context_options(const Config& c) {
  transport::ContextOptions o;
  o.transport = transport::parse_transport(c.transport);
  o.name = "rdmaps-server";
  return o;
}

bool finite_floats(const float* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return false;
  return true;
}
}  // namespace

struct WorkerState {
  uint32_t id = 0;
  bool connected_once = false;
  bool live = false;
  std::unique_ptr<transport::Endpoint> ep;
  std::unique_ptr<transport::Region> inbox;   // remote-write, handed to this worker only
  std::unique_ptr<transport::Region> backup;  // parameters this worker was last sent; put source
  std::unique_ptr<transport::Region> outbox;  // mailbox + versions staged for puts
  std::unique_ptr<transport::RemoteRegion> receive;
  bool use_am = false;
  bool departed = false;  // its connection closed: take in what it sent, send it nothing
  uint64_t expected_seq = 1;
  uint64_t clock = 0;
  Mailbox mailbox{};
  transport::Request mailbox_request;
  std::vector<transport::Request> writeback_requests;
  // Headers of in-flight active messages (UCX 1.13 reads them until completion).
  WriteBackHeader writeback_headers[2]{};
  WriteBackHeader mailbox_header{};
  std::string name;
};

class ServerImpl {
 public:
  explicit ServerImpl(const ServerOptions& options)
      : options_(options),
        config_(options.config),
        update_(UpdateParams::from(options.config)),
        pool_(options.config.apply_threads) {
    if (options.servers == 0 || options.index >= options.servers)
      throw Error(Errc::kInvalidArgument, "server index " + std::to_string(options.index) + " is not below the " +
                                              std::to_string(options.servers) + " servers");
    if (options.workers == 0 || options.workers > kMaxWorkers)
      throw Error(Errc::kInvalidArgument, "a server serves 1 to " + std::to_string(kMaxWorkers) + " workers, not " +
                                              std::to_string(options.workers) + " (--workers)");
    if (options.gpu_shard) {
      cuda::GpuInfo gpus = cuda::probe_gpus();
      if (gpus.device_count() == 0) throw Error(Errc::kUnsupported, "--gpu-shard needs a CUDA device: " + gpus.reason);
    }
    context_ = transport::create_context(context_options(config_));
    listener_ = context_->listen(transport::SockAddr::parse(options.listen));
    workers_.resize(options.workers);
    for (uint32_t i = 0; i < options.workers; ++i) workers_[i].id = i;
    stats_.applied_per_worker.assign(options.workers, 0);
    stats_.rejected_per_worker.assign(options.workers, 0);
    stats_.staleness.assign(kStalenessBuckets, 0);
    context_->set_am_handler(kAmPush, [this](transport::AmMessage& m) { on_push_am(m); });
  }

  ~ServerImpl() {
    for (auto& w : workers_) drop(w, nullptr);
    closing_.clear();
  }

  std::string address() const { return listener_->address().to_string(); }
  void stop() { stop_.store(true); }
  ServerStats stats() const {
    std::lock_guard<std::mutex> lock(stats_mu_);
    return stats_;
  }

  void run();

 private:
  // Set-up.
  void accept_worker();
  void set_table(const std::vector<TensorDecl>& tensors);
  // Data path.
  bool poll_inbox(WorkerState& w);
  void take_in_last_messages(WorkerState& w);
  bool complete_am_landings();
  void on_push_am(transport::AmMessage& m);
  void handle(WorkerState& w, const SlotHeader& h, const float* payload);
  /// `local`: index in this server's range of the first float the push covers.
  void apply_push(WorkerState& w, const SlotHeader& h, size_t local, const float* payload);
  void write_back(WorkerState& w, const SlotHeader& h);
  void write_back_to(WorkerState& w, const SlotHeader& h);
  void send_mailbox(WorkerState& w);
  void update_min_clock();
  // Faults.
  void reject(WorkerState& w, const std::string& why);
  void drop(WorkerState& w, const char* why);
  void check_liveness();
  bool all_done() const;
  void report(Clock::time_point now);

  uint8_t* slot(WorkerState& w, uint64_t seq) {
    return static_cast<uint8_t*>(w.inbox->data()) + ((seq - 1) % config_.inbox_slots) * slot_layout_.slot_bytes();
  }
  template <typename F>
  void with_stats(F&& f) {
    std::lock_guard<std::mutex> lock(stats_mu_);
    f(stats_);
  }

  ServerOptions options_;
  Config config_;
  UpdateParams update_;
  ApplyPool pool_;
  std::unique_ptr<transport::Context> context_;  // first member destroyed last among owners below
  std::unique_ptr<transport::Listener> listener_;
  std::vector<WorkerState> workers_;
  std::unordered_map<const transport::Endpoint*, uint32_t> by_endpoint_;

  // The served range, known once the first worker declared the table.
  std::unique_ptr<Partition> partition_;
  std::vector<TensorDecl> table_;
  Range range_;
  uint32_t shards_ = 0;
  SlotLayout slot_layout_{0};
  ReceiveLayout receive_layout_{0, 0};
  std::vector<float> params_, state_;
  std::vector<float> wire_scratch_;  // a bf16 push decoded, one shard
  std::unique_ptr<GpuShard> gpu_;    // ServerOptions::gpu_shard: params_ and state_ live here instead
  std::vector<uint64_t> versions_;
  uint64_t min_clock_ = 0;

  struct Landing {
    uint32_t worker;
    uint64_t seq;
    transport::Request request;
  };
  std::vector<Landing> landings_;
  struct Closing {
    std::unique_ptr<transport::Endpoint> ep;
    Clock::time_point since;
  };
  std::vector<Closing> closing_;

  mutable std::mutex stats_mu_;
  ServerStats stats_;
  Clock::time_point last_report_ = Clock::now(), last_waiting_ = Clock::now();
  ServerStats last_stats_;
  std::atomic<bool> stop_{false};
};

// ---- set-up ------------------------------------------------------------------

void ServerImpl::set_table(const std::vector<TensorDecl>& tensors) {
  table_ = tensors;
  partition_ = std::make_unique<Partition>(tensors, options_.servers, config_.shard_floats);
  range_ = partition_->server_range(options_.index);
  shards_ = partition_->shard_count(options_.index);
  slot_layout_ = SlotLayout{config_.shard_floats * sizeof(float)};
  receive_layout_ = ReceiveLayout{shards_, range_.size()};
  if (options_.gpu_shard) {
    gpu_ = std::make_unique<GpuShard>(range_.size(), config_.shard_floats, static_cast<uint32_t>(workers_.size()),
                                      config_.rule);
  } else {
    params_.assign(range_.size(), 0.0f);
    if (needs_state(config_.rule)) state_.assign(range_.size(), 0.0f);
  }
  wire_scratch_.assign(config_.shard_floats, 0.0f);
  versions_.assign(shards_, 0);
}

void ServerImpl::accept_worker() {
  std::unique_ptr<transport::Endpoint> ep;
  try {
    ep = listener_->accept(kHandshakeTimeout);
  } catch (const Error& e) {
    std::fprintf(stderr, "rdmaps-server: a connection attempt failed: %s\n", e.what());
    return;
  }
  const std::string peer = ep->peer_name();
  Welcome welcome;
  auto refuse = [&](const std::string& why) {
    welcome.accepted = 0;
    welcome.reason = why;
    std::fprintf(stderr, "rdmaps-server: refused %s: %s\n", peer.c_str(), why.c_str());
    try {
      ep->send_control(encode(welcome), kHandshakeTimeout);
    } catch (const Error&) {
    }
  };
  Hello hello;
  try {
    hello = decode_hello(ep->recv_control(kHandshakeTimeout), peer);
  } catch (const Error& e) {
    refuse(e.what());
    return;
  }
  if (hello.secret_digest != secret_digest(config_.secret))
    return refuse("wrong shared secret (--secret / RDMAPS_SECRET)");
  if (hello.worker >= workers_.size())
    return refuse("worker id " + std::to_string(hello.worker) + " is not below the " + std::to_string(workers_.size()) +
                  " workers this server expects (--workers)");
  WorkerState& w = workers_[hello.worker];
  if (w.live) return refuse("worker id " + std::to_string(hello.worker) + " is already connected");
  if (options_.rule_from_workers) {
    if (!partition_) {
      hello.rule.apply_to(config_);
      update_ = UpdateParams::from(config_);
    } else if (std::string d = RuleParams::from(config_).difference(hello.rule); !d.empty()) {
      return refuse("its update rule differs from the one adopted from the first worker (" + d + ", adopted first)");
    }
  }
  if (!partition_) {
    try {
      set_table(hello.tensors);
    } catch (const Error& e) {
      return refuse(e.what());
    }
  } else {
    bool same = hello.tensors.size() == table_.size();
    for (size_t i = 0; same && i < table_.size(); ++i)
      same = hello.tensors[i].name == table_[i].name && hello.tensors[i].floats == table_[i].floats;
    if (!same) return refuse("its declared tensors differ from the other workers' (names, order or sizes)");
  }
  try {
    w.receive = ep->import(transport::RegionDescriptor::parse(hello.receive_region, peer));
    if (w.receive->size() < receive_layout_.bytes())
      return refuse("receive region of " + std::to_string(w.receive->size()) + " bytes, needs " +
                    std::to_string(receive_layout_.bytes()));
    // Registered once per connection, never per push.
    w.inbox = context_->allocate(slot_layout_.slot_bytes() * config_.inbox_slots, Access::kRemoteWrite);
    std::memset(w.inbox->data(), 0, w.inbox->size());
    w.backup = context_->allocate(std::max<size_t>(range_.size() * sizeof(float), 64), Access::kNone);
    std::memset(w.backup->data(), 0, w.backup->size());
    if (gpu_) gpu_->reset_worker(w.id);
    w.outbox = context_->allocate(sizeof(Mailbox) + shards_ * 8 + 64, Access::kNone);
  } catch (const Error& e) {
    return refuse(std::string("server could not register memory: ") + e.what());
  }
  PushPath path = static_cast<PushPath>(hello.push_path);
  w.use_am = path == PushPath::kAm || (path == PushPath::kAuto && !ep->rma_native());
  w.departed = false;
  w.expected_seq = 1;
  // A rejoining worker starts at the slowest live clock so it holds nobody back.
  w.clock = w.connected_once ? min_clock_ : 0;
  w.mailbox = Mailbox{};
  w.mailbox.min_clock = min_clock_;
  w.name = "worker " + std::to_string(w.id) + " (" + peer + ")";
  welcome.accepted = 1;
  welcome.range_begin = range_.begin;
  welcome.range_end = range_.end;
  welcome.shard_floats = config_.shard_floats;
  welcome.inbox_slots = config_.inbox_slots;
  welcome.start_clock = w.clock;
  welcome.inbox_region = w.inbox->descriptor(Access::kRemoteWrite).serialize();
  try {
    ep->send_control(encode(welcome), kHandshakeTimeout);
  } catch (const Error& e) {
    std::fprintf(stderr, "rdmaps-server: %s left during the handshake: %s\n", w.name.c_str(), e.what());
    return;
  }
  by_endpoint_[ep.get()] = w.id;
  w.ep = std::move(ep);
  w.live = true;
  w.connected_once = true;
  if (options_.log_connections)
    std::fprintf(stderr, "rdmaps-server: %s connected, push path %s, lanes: %s\n", w.name.c_str(),
                 w.use_am ? "am" : "put", w.ep->describe().c_str());
  update_min_clock();
}

// ---- data path ---------------------------------------------------------------

bool ServerImpl::poll_inbox(WorkerState& w) {
  uint8_t* s = slot(w, w.expected_seq);
  auto* doorbell = reinterpret_cast<std::atomic<uint64_t>*>(s + slot_layout_.doorbell_offset());
  uint64_t ring = doorbell->load(std::memory_order_acquire);
  if (ring == 0 || ring + config_.inbox_slots == w.expected_seq) return false;  // empty or last lap's
  SlotHeader h;
  std::memcpy(&h, s, sizeof(h));
  if (ring != w.expected_seq) {
    reject(w, "doorbell " + std::to_string(ring) + " where sequence " + std::to_string(w.expected_seq) + " was due");
  } else {
    handle(w, h, reinterpret_cast<const float*>(s + slot_layout_.payload_offset()));
  }
  if (!w.live) return true;
  doorbell->store(0, std::memory_order_relaxed);
  w.mailbox.consumed_seq = w.expected_seq++;
  send_mailbox(w);
  return true;
}

void ServerImpl::handle(WorkerState& w, const SlotHeader& h, const float* payload) {
  // Nothing in the header is trusted before these checks.
  if (h.magic != kSlotMagic) return reject(w, "bad magic");
  if (h.worker != w.id) return reject(w, "header claims worker " + std::to_string(h.worker));
  if (h.seq != w.expected_seq)
    return reject(w, "sequence " + std::to_string(h.seq) + ", expected " + std::to_string(w.expected_seq));
  if (h.flags & ~kFlagBf16) return reject(w, "unknown header flags " + std::to_string(h.flags));
  const bool bf16 = h.flags & kFlagBf16;
  if (bf16 && h.type != static_cast<uint16_t>(MsgType::kPush))
    return reject(w, "a bf16 payload in a message other than a push");
  switch (static_cast<MsgType>(h.type)) {
    case MsgType::kPush:
    case MsgType::kInit: {
      if (h.shard >= shards_) return reject(w, "shard " + std::to_string(h.shard) + " of " + std::to_string(shards_));
      Range shard = partition_->shard(options_.index, h.shard);
      if (h.length == 0 || h.offset > shard.size() || h.length > shard.size() - h.offset)
        return reject(w, "floats [" + std::to_string(h.offset) + ", +" + std::to_string(h.length) + ") outside shard " +
                             std::to_string(h.shard) + " of " + std::to_string(shard.size()));
      if (h.type == static_cast<uint16_t>(MsgType::kPush) && h.base_version > versions_[h.shard])
        return reject(w, "base version " + std::to_string(h.base_version) + " is ahead of shard " +
                             std::to_string(h.shard) + " (" + std::to_string(versions_[h.shard]) + ")");
      if (!(std::isfinite(h.learning_rate) && h.learning_rate >= 0))
        return reject(w, "learning rate " + std::to_string(h.learning_rate) + " in a push");
      const float* raw = payload;  // a GPU shard widens bf16 itself, in the update's pass
      if (bf16 && (!gpu_ || config_.check_nan)) {
        decompress_bf16(reinterpret_cast<const uint16_t*>(payload), wire_scratch_.data(), h.length);
        payload = wire_scratch_.data();
      }
      if (config_.check_nan && !finite_floats(payload, h.length))
        return reject(w, "gradient for shard " + std::to_string(h.shard) + " contains NaN or Inf");
      const size_t local = (shard.begin - range_.begin) + h.offset;
      if (h.type == static_cast<uint16_t>(MsgType::kInit)) {
        if (gpu_)
          gpu_->init(local, payload, h.length);
        else
          std::memcpy(params_.data() + local, payload, h.length * sizeof(float));
        return;
      }
      return apply_push(w, h, local, gpu_ && bf16 ? raw : payload);
    }
    case MsgType::kPull:
      if (h.length == 0 || h.shard >= shards_ || h.length > shards_ - h.shard)
        return reject(w, "pull of shards [" + std::to_string(h.shard) + ", +" + std::to_string(h.length) + ")");
      return write_back(w, h);
    case MsgType::kClock:
      if (h.clock != w.clock + 1)
        return reject(w, "clock " + std::to_string(h.clock) + " after " + std::to_string(w.clock));
      w.clock = h.clock;
      with_stats([](ServerStats& s) { ++s.clocks; });
      return update_min_clock();
    case MsgType::kBye:
      return drop(w, "left");
  }
  reject(w, "unknown message type " + std::to_string(h.type));
}

void ServerImpl::apply_push(WorkerState& w, const SlotHeader& h, size_t local, const float* g) {
  uint64_t tau = versions_[h.shard] - h.base_version;
  if (config_.staleness_policy == StalenessPolicy::kDropAboveMax && tau > config_.tau_max) {
    with_stats([](ServerStats& s) { ++s.dropped; });
    return;
  }
  float lr = h.learning_rate > 0 ? h.learning_rate : config_.learning_rate;
  if (config_.staleness_policy == StalenessPolicy::kScaleByTau && tau > 1) lr /= static_cast<float>(tau);
  const Step step = step_for(update_, lr, versions_[h.shard] + 1, tau);
  if (gpu_) {
    gpu_->apply(update_, step, w.id, local, g, (h.flags & kFlagBf16) != 0, h.length);
  } else {
    float* params = params_.data() + local;
    const float* backup = static_cast<const float*>(w.backup->data()) + local;
    float* state = state_.empty() ? nullptr : state_.data() + local;
    pool_.run(h.length, [&](size_t begin, size_t end) {
      apply_update(update_, step, params + begin, g + begin, backup + begin, state ? state + begin : nullptr,
                   end - begin);
    });
  }
  ++versions_[h.shard];
  with_stats([&](ServerStats& s) {
    ++s.pushes;
    s.bytes_in += h.length * ((h.flags & kFlagBf16) ? sizeof(uint16_t) : sizeof(float));
    ++s.applied_per_worker[w.id];
    ++s.staleness[std::min<uint64_t>(tau, kStalenessBuckets - 1)];
  });
}

// Copy fresh parameters into the worker's backup (what DC-ASGD compensates
// against), then put them from there: one copy serves both, and it does not
// change while in flight. Data, then fence, then the mailbox.
void ServerImpl::write_back(WorkerState& w, const SlotHeader& h) {
  if (w.departed) return;  // nobody left to read it
  try {
    write_back_to(w, h);
  } catch (const Error& e) {
    // The worker died with a write-back in flight: drop it, keep serving the others.
    drop(w, (std::string("write-back failed: ") + e.what() + "; dropped from the clock").c_str());
  }
}

void ServerImpl::write_back_to(WorkerState& w, const SlotHeader& h) {
  for (auto& r : w.writeback_requests) r.wait_for(kIoTimeout);  // backup and headers are reused below
  w.writeback_requests.clear();
  Range first = partition_->shard(options_.index, h.shard);
  Range last = partition_->shard(options_.index, h.shard + h.length - 1);
  size_t local = first.begin - range_.begin, floats = last.end - first.begin;
  auto* backup = static_cast<float*>(w.backup->data()) + local;
  if (gpu_)
    gpu_->snapshot(w.id, local, floats, backup);
  else
    std::memcpy(backup, params_.data() + local, floats * sizeof(float));
  auto* versions = reinterpret_cast<uint64_t*>(static_cast<uint8_t*>(w.outbox->data()) + sizeof(Mailbox));
  std::memcpy(versions + h.shard, versions_.data() + h.shard, h.length * 8);
  uint64_t params_off = receive_layout_.params_offset() + local * sizeof(float);
  uint64_t versions_off = receive_layout_.versions_offset() + h.shard * 8;
  if (w.use_am) {
    w.writeback_headers[0] = WriteBackHeader{params_off, 0, 0, {}};
    w.writeback_headers[1] = WriteBackHeader{versions_off, 0, 0, {}};
    w.writeback_requests.push_back(w.ep->am_send(kAmWriteBack, &w.writeback_headers[0], sizeof(WriteBackHeader), backup,
                                                 floats * sizeof(float), w.backup.get()));
    w.writeback_requests.push_back(w.ep->am_send(kAmWriteBack, &w.writeback_headers[1], sizeof(WriteBackHeader),
                                                 versions + h.shard, h.length * 8, w.outbox.get()));
  } else {
    w.writeback_requests.push_back(w.ep->put(backup, floats * sizeof(float), *w.receive, params_off, w.backup.get()));
    w.writeback_requests.push_back(
        w.ep->put(versions + h.shard, h.length * 8, *w.receive, versions_off, w.outbox.get()));
    w.ep->fence();
  }
  w.mailbox.pull_done = h.seq;
  w.mailbox.pull_stamp = min_clock_;
  with_stats([&](ServerStats& s) {
    ++s.pulls;
    s.bytes_out += floats * sizeof(float);
  });
  // The credit for this message goes out with the same mailbox (poll_inbox).
}

void ServerImpl::send_mailbox(WorkerState& w) {
  if (!w.live || w.departed) return;
  try {
    w.mailbox_request.wait_for(kIoTimeout);  // its staging area is reused below
    if (w.use_am) {
      // Ordered after this worker's earlier write-back messages: the worker
      // applies it once their payloads have landed.
      w.mailbox_header = WriteBackHeader{0, 1, 0, w.mailbox};
      w.mailbox_request = w.ep->am_send(kAmWriteBack, &w.mailbox_header, sizeof(WriteBackHeader), nullptr, 0);
    } else {
      std::memcpy(w.outbox->data(), &w.mailbox, sizeof(Mailbox));
      w.mailbox_request = w.ep->put(w.outbox->data(), sizeof(Mailbox), *w.receive, 0, w.outbox.get());
    }
  } catch (const Error& e) {
    drop(w, e.what());
  }
}

void ServerImpl::update_min_clock() {
  uint64_t m = UINT64_MAX;
  for (const auto& w : workers_)
    if (w.live || !w.connected_once) m = std::min(m, w.clock);  // not-yet-connected workers hold at 0
  if (m == UINT64_MAX) m = min_clock_;
  with_stats([&](ServerStats& s) { s.min_clock = m; });
  if (m == min_clock_) return;
  min_clock_ = m;
  for (auto& w : workers_) {
    if (!w.live) continue;
    w.mailbox.min_clock = m;
    send_mailbox(w);
  }
}

// Active-message push path: land the payload in the same inbox slot a put
// would have filled; the doorbell rings once the payload is complete.
void ServerImpl::on_push_am(transport::AmMessage& m) {
  auto it = by_endpoint_.find(m.from);
  if (it == by_endpoint_.end()) return;  // unknown sender: dropped by the transport
  WorkerState& w = workers_[it->second];
  if (!w.live) return;
  SlotHeader h;
  if (m.header_length != sizeof(h))
    return reject(w, "active-message header of " + std::to_string(m.header_length) + " bytes");
  std::memcpy(&h, m.header, sizeof(h));
  if (h.seq < w.expected_seq || h.seq >= w.expected_seq + config_.inbox_slots)
    return reject(w, "active message with sequence " + std::to_string(h.seq) + " outside the credit window [" +
                         std::to_string(w.expected_seq) + ", +" + std::to_string(config_.inbox_slots) + ")");
  if (m.length > slot_layout_.payload_bytes)
    return reject(w, "active-message payload of " + std::to_string(m.length) + " bytes exceeds a slot");
  uint8_t* s = slot(w, h.seq);
  std::memcpy(s, &h, sizeof(h));
  Landing landing{w.id, h.seq, transport::Request()};
  if (m.length)
    landing.request =
        context_->am_receive(m, *w.inbox, (s - static_cast<uint8_t*>(w.inbox->data())) + slot_layout_.payload_offset());
  landings_.push_back(std::move(landing));
}

bool ServerImpl::complete_am_landings() {
  bool any = false;
  std::erase_if(landings_, [&](Landing& l) {
    try {
      if (!l.request.test()) return false;
    } catch (const Error& e) {
      reject(workers_[l.worker], std::string("payload did not arrive: ") + e.what());
      return true;
    }
    WorkerState& w = workers_[l.worker];
    if (w.live)
      reinterpret_cast<std::atomic<uint64_t>*>(slot(w, l.seq) + slot_layout_.doorbell_offset())
          ->store(l.seq, std::memory_order_release);
    any = true;
    return true;
  });
  return any;
}

// ---- faults ------------------------------------------------------------------

void ServerImpl::reject(WorkerState& w, const std::string& why) {
  std::fprintf(stderr, "rdmaps-server: rejected a message from %s: %s\n", w.name.c_str(), why.c_str());
  with_stats([&](ServerStats& s) {
    ++s.rejected;
    ++s.rejected_per_worker[w.id];
  });
  ++w.mailbox.rejected;
}

void ServerImpl::drop(WorkerState& w, const char* why) {
  if (!w.live && !w.ep) return;
  if (why) {
    const bool left = std::strcmp(why, "left") == 0;
    if (options_.log_connections || !left) std::fprintf(stderr, "rdmaps-server: %s %s\n", w.name.c_str(), why);
    with_stats([&](ServerStats& s) { ++(left ? s.workers_left : s.workers_lost); });
  }
  w.live = false;
  for (auto& r : w.writeback_requests) r = transport::Request();
  w.writeback_requests.clear();
  w.mailbox_request = transport::Request();
  std::erase_if(landings_, [&](const Landing& l) { return l.worker == w.id; });
  w.receive.reset();
  if (w.ep) {
    by_endpoint_.erase(w.ep.get());
    // Close once the worker closed its side (or soon after): both closing at
    // once leaves neither side to acknowledge the other.
    closing_.push_back({std::move(w.ep), Clock::now()});
  }
  if (why) update_min_clock();
}

void ServerImpl::check_liveness() {
  for (auto& w : workers_) {
    if (!w.live || !(w.ep->peer_closed() || w.ep->failed())) continue;
    take_in_last_messages(w);  // a clean leave ends with a Bye there
    if (w.live) drop(w, "died (connection closed); dropped from the clock");
  }
  auto now = Clock::now();
  std::erase_if(closing_, [&](Closing& c) { return c.ep->peer_closed() || c.ep->failed() || now - c.since > 5s; });
}

// A worker's socket can close while its last messages (pushes, its clock, a
// Bye) wait in its inbox or in UCX: the server may have polled that inbox
// just before they landed. Take them in before judging the worker dead, so
// nothing it completed is lost and a clean leave is not reported as a death.
void ServerImpl::take_in_last_messages(WorkerState& w) {
  w.departed = true;
  const auto deadline = Clock::now() + 100ms;
  for (int quiet = 0; w.live && quiet < 16 && Clock::now() < deadline;) {
    context_->progress();
    complete_am_landings();
    if (poll_inbox(w))
      quiet = 0;
    else if (std::none_of(landings_.begin(), landings_.end(), [&](const Landing& l) { return l.worker == w.id; }))
      ++quiet;
  }
}

bool ServerImpl::all_done() const {
  for (const auto& w : workers_)
    if (w.live || !w.connected_once) return false;
  return closing_.empty();
}

void ServerImpl::report(Clock::time_point now) {
  if (now - last_waiting_ > 10s) {
    last_waiting_ = now;
    std::string missing;
    for (const auto& w : workers_)
      if (!w.connected_once) missing += (missing.empty() ? "" : ", ") + std::to_string(w.id);
    if (!missing.empty())
      std::fprintf(stderr, "rdmaps-server: waiting for workers %s to connect to %s (the clock holds at %llu)\n",
                   missing.c_str(), address().c_str(), static_cast<unsigned long long>(min_clock_));
  }
  if (options_.stats_interval.count() == 0 || now - last_report_ < options_.stats_interval) return;
  ServerStats s = stats();
  const ServerStats& last = last_stats_;
  double dt = std::chrono::duration<double>(now - last_report_).count();
  std::fprintf(stderr,
               "rdmaps-server: %.0f pushes/s, in %.3f GB/s, out %.3f GB/s, staleness p50 %.0f p99 %.0f, "
               "min clock %llu, dropped %llu, rejected %llu\n",
               (s.pushes - last.pushes) / dt, (s.bytes_in - last.bytes_in) / dt / 1e9,
               (s.bytes_out - last.bytes_out) / dt / 1e9, s.staleness_quantile(0.5), s.staleness_quantile(0.99),
               static_cast<unsigned long long>(s.min_clock), static_cast<unsigned long long>(s.dropped),
               static_cast<unsigned long long>(s.rejected));
  last_stats_ = s;
  last_report_ = now;
}

void ServerImpl::run() {
  ps::FlushDenormals flush;  // this thread applies updates: subnormals must not slow it
  // Poll while busy; when idle, sleep in short steps: one-sided doorbells
  // raise no event, so the wait must stay short (see docs/protocol.md).
  transport::IdleBackoff idle({.spin = 50us, .yield = 0us, .sleep = 20us, .max_sleep = 20us});
  uint32_t iteration = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    bool busy = context_->progress() != 0;
    busy |= complete_am_landings();
    if (partition_)
      for (auto& w : workers_)
        if (w.live) busy |= poll_inbox(w);
    if ((++iteration & 0xff) == 0 || !busy) {
      if (listener_->has_pending()) accept_worker();
      check_liveness();
      report(Clock::now());
      if (options_.exit_when_done && all_done()) break;
    }
    idle.pause(busy);
  }
}

// ---- public face -------------------------------------------------------------

Server::Server(const ServerOptions& options) : impl_(std::make_unique<ServerImpl>(options)) {}
Server::~Server() = default;
std::string Server::address() const { return impl_->address(); }
void Server::run() { impl_->run(); }
void Server::stop() { impl_->stop(); }
ServerStats Server::stats() const { return impl_->stats(); }

}  // namespace rdmaps
