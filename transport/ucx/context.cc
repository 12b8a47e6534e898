#include "transport/ucx/context.h"

#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "rdmaps/log.h"
#include "transport/tcp_socket.h"
#include "transport/ucx/capabilities.h"
#include "transport/ucx/endpoint.h"
#include "transport/ucx/listener.h"
#include "transport/ucx/log_filter.h"
#include "transport/ucx/region.h"
#include "transport/ucx/shm_leftovers.h"
#include "transport/ucx/status.h"

namespace rdmaps::transport {

const char* transport_name(TransportKind kind) {
  switch (kind) {
    case TransportKind::kAuto:
      return "auto";
    case TransportKind::kTcp:
      return "tcp";
    case TransportKind::kShm:
      return "shm";
  }
  return "?";
}

TransportKind parse_transport(std::string_view text) {
  if (text == "auto") return TransportKind::kAuto;
  if (text == "tcp") return TransportKind::kTcp;
  if (text == "shm") return TransportKind::kShm;
  throw Error(Errc::kInvalidArgument,
              "unknown transport '" + std::string(text) + "': expected tcp, shm or auto (auto uses UCX_TLS)");
}

std::unique_ptr<Context> create_context(const ContextOptions& options) {
  return std::make_unique<ucx::UcxContext>(options);
}

MemorySupport probe_memory_support(const ContextOptions& options) {
  return ucx::probe_memory_support(options.transport);
}

}  // namespace rdmaps::transport

namespace rdmaps::transport::ucx {

const char* transport_tls(TransportKind kind) {
  switch (kind) {
    case TransportKind::kTcp:
      return "tcp";
    case TransportKind::kShm:
      return "posix,cma,self";
    case TransportKind::kAuto:
      break;
  }
  return "";
}

namespace {

// UCX's TCP keepalive (idle 10 s, then probes 2 s apart) declares a
// connection dead within about 20 s of silence: a network blip that long ended
// a job whose waits allow minutes. Probes start at half the bound and four
// more, an eighth apart, end it; a variable the user set is theirs.
void set_keepalive(ucp_config_t* config, std::chrono::milliseconds silence) {
  if (silence.count() <= 0) return;
  const KeepaliveSchedule k = KeepaliveSchedule::of(silence);
  // By their names in UCX's tcp table: ucp_config_modify() keeps a name it
  // does not know and hands it to every transport's table, where
  // "TCP_KEEPIDLE" matched nothing (measured: keepalive still at 10 s).
  const std::pair<const char*, std::string> values[] = {
      {"KEEPIDLE", std::to_string(k.idle.count()) + "ms"},
      {"KEEPINTVL", std::to_string(k.interval.count()) + "ms"},
      {"KEEPCNT", std::to_string(k.count)},
  };
  for (const auto& [name, value] : values) {
    const std::string variable = "UCX_TCP_" + std::string(name);
    if (!std::getenv(variable.c_str()))
      check(ucp_config_modify(config, name, value.c_str()), "setting UCX's TCP keepalive", variable + "=" + value);
  }
}

// The text of `rest` up to `separator`, taken off `rest`.
std::string_view take(std::string_view& rest, char separator) {
  const std::string_view item = rest.substr(0, rest.find(separator));
  rest.remove_prefix(std::min(rest.size(), item.size() + 1));
  return item;
}

// `config`'s UCX_<name> (TLS, NET_DEVICES: from the environment or ucx.conf;
// "all" by default). UCX has no getter for one field, so it is read from the
// printed configuration.
std::string configured(const ucp_config_t* config, std::string_view name) {
  char* text = nullptr;
  size_t size = 0;
  FILE* stream = open_memstream(&text, &size);
  if (stream == nullptr) return "all";
  ucp_config_print(config, stream, nullptr, UCS_CONFIG_PRINT_CONFIG);
  std::fclose(stream);
  const std::unique_ptr<char, decltype(&std::free)> owned(text, &std::free);
  const std::string key = "UCX_" + std::string(name) + "=";
  std::string_view value = "all";
  for (std::string_view lines(text, size); !lines.empty();)
    if (const std::string_view line = take(lines, '\n'); line.starts_with(key)) value = line.substr(key.size());
  return std::string(value);
}

// Whether a UCX_TLS value (a list, "all", or an exclusion "^...") lets UCX
// use any of `names`.
bool tls_may_use(std::string_view tls, std::initializer_list<std::string_view> names) {
  const bool excluding = tls.starts_with('^');
  if (excluding) tls.remove_prefix(1);
  bool named = false;
  while (!tls.empty()) {
    const std::string_view item = take(tls, ',');
    named = named || (!excluding && item == "all") || std::find(names.begin(), names.end(), item) != names.end();
  }
  return excluding != named;
}

// UCX 1.13's sysv transport keeps its queues, and the memory it allocates,
// in SysV segments of mode 0660: every process of the owner's group attached
// them and read and wrote the model (a review did, as another user of the
// group). Transport auto leaves it out of a UCX_TLS that does not name it
// (posix, which takes its place, maps files only this user can open); one
// that names it, or an alias holding it, is the user's, and warned of.
void keep_sysv_out(ucp_config_t* config) {
  const std::string tls = configured(config, "TLS");
  if (!tls_may_use(tls, {"sysv", "sm", "shm", "mm"})) return;
  if (tls == "all" || tls.starts_with('^')) {
    const std::string without = tls == "all" ? "^sysv" : tls + ",sysv";
    check(ucp_config_modify(config, "TLS", without.c_str()), "leaving UCX's sysv transport out", "UCX_TLS=" + without);
    return;
  }
  static std::once_flag said;
  std::call_once(said, [&] {
    logf(LogLevel::kWarn,
         "rdmaps: warning: UCX_TLS=%s lets UCX use its sysv transport, whose shared-memory segments every process of "
         "this user's group may attach, reading and writing the model: leave it out (sysv, and the aliases sm, shm "
         "and mm that hold it), or use --transport shm",
         tls.c_str());
  });
}

}  // namespace

UcxContext::UcxContext(const ContextOptions& options) : options_(options) {
  install_log_filter_once();
  if (options.transport != TransportKind::kTcp) sweep_stale_shm_once();
  ucp_config_t* raw_config = nullptr;
  check(ucp_config_read(nullptr, nullptr, &raw_config), "reading the UCX configuration", "UCX_* environment");
  ConfigPtr config(raw_config);
  if (options.transport != TransportKind::kAuto)
    check(ucp_config_modify(config.get(), "TLS", transport_tls(options.transport)), "selecting UCX transports",
          std::string("UCX_TLS=") + transport_tls(options.transport));
  else
    keep_sysv_out(config.get());
  // UCX's tcp transport listens on every device it uses and takes any
  // connection there, unauthenticated: a job on loopback keeps it on loopback.
  if (options.loopback_only && !std::getenv("UCX_NET_DEVICES"))
    check(ucp_config_modify(config.get(), "NET_DEVICES", "lo"), "keeping UCX on loopback", "UCX_NET_DEVICES=lo");
  // Only where tcp can be in use (the transport's UCX_TLS, or the user's for
  // auto): UCX warns of the keepalive variables as "invalid configurations"
  // in every process whose UCX_TLS has no tcp.
  if (tls_may_use(configured(config.get(), "TLS"), {"tcp"})) set_keepalive(config.get(), options.peer_silence);

  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED | UCP_PARAM_FIELD_NAME;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AMO64 | UCP_FEATURE_AM;
  if (options.wakeup) params.features |= UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = 0;
  params.name = options_.name.c_str();
  ucp_context_h context = nullptr;
  const ucs_status_t init = ucp_init(&params, config.get(), &context);
  // At start there is no peer: the settings chose no device (UCX_NET_DEVICES=bogus0 blamed "the peer").
  if (init == UCS_ERR_NO_DEVICE || init == UCS_ERR_UNREACHABLE)
    throw Error(Errc::kInvalidArgument,
                std::string("initializing UCX (transport ") + transport_name(options.transport) +
                    "): " + ucs_status_string(init) +
                    ": UCX finds no transport or device it may use with UCX_TLS=" + configured(config.get(), "TLS") +
                    " and UCX_NET_DEVICES=" + configured(config.get(), "NET_DEVICES") +
                    " (`ucx_info -d` lists this machine's devices)");
  check(init, "initializing UCX", std::string("transport ") + transport_name(options.transport));
  context_.reset(context);

  ucp_worker_params_t wparams{};
  wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  // A progress thread and the caller both enter UCX, so UCX must lock. Else
  // one thread at a time, but not always the one that made it: a server lane's
  // context is made on the control thread and served on the lane's, and a
  // client's calls may come from any thread in turn (the C ABI, Python).
  // That is SERIALIZED's contract; SINGLE's is the creating thread alone, and
  // on mlx5 it lets a doorbell go without the flush another core's next one needs.
  wparams.thread_mode = options.progress_thread ? UCS_THREAD_MODE_MULTI : UCS_THREAD_MODE_SERIALIZED;
  ucp_worker_h worker = nullptr;
  check(ucp_worker_create(context_.get(), &wparams, &worker), "creating a UCX worker", "");
  worker_.reset(worker);

  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_ADDRESS;
  check(ucp_worker_query(worker_.get(), &attr), "querying the UCX worker address", "");
  // Released on every path (out of memory copying it too).
  const std::unique_ptr<ucp_address_t, std::function<void(ucp_address_t*)>> address(
      attr.address, [w = worker_.get()](ucp_address_t* a) { ucp_worker_release_address(w, a); });
  auto* bytes = reinterpret_cast<const uint8_t*>(address.get());
  worker_address_.assign(bytes, bytes + attr.address_length);

  if (options.wakeup) {
    check(ucp_worker_get_efd(worker_.get(), &event_fd_), "getting the UCX worker event fd", "");
    epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_.valid()) throw Error(Errc::kIo, std::string("epoll_create1: ") + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, event_fd_, &ev) != 0)
      throw Error(Errc::kIo, std::string("epoll_ctl on the UCX event fd: ") + std::strerror(errno));
  }
  guard_am_ids();
  if (options.progress_thread) progress_thread_ = std::thread([this] { progress_loop(); });
}

UcxContext::~UcxContext() {
  if (progress_thread_.joinable()) {
    stop_ = true;
    ucp_worker_signal(worker_.get());
    progress_thread_.join();
  }
  // Endpoints closing: give their peers a moment to acknowledge, then release
  // them (a worker destroyed under an unreleased close request asserts).
  auto close_deadline = std::min(std::chrono::steady_clock::now() + std::chrono::seconds(2), end_by_);
  while (has_orphans_.load() && std::chrono::steady_clock::now() < close_deadline) {
    progress();
    std::lock_guard<std::mutex> lock(orphans_mu_);
    if (closes_.empty()) break;
  }
  give_up_closes();
  // Give released in-flight requests a moment to finish; never free them early.
  auto deadline = std::min(std::chrono::steady_clock::now() + std::chrono::seconds(1), end_by_);
  while (has_orphans_.load() && std::chrono::steady_clock::now() < deadline) progress();
  drop_retired();
  lingering_.clear();  // no progress from here on: no emulated put lands any more
  if (!orphans_.empty())
    logf(LogLevel::kWarn, "rdmaps: warning: %zu released request(s) still in flight at shutdown (left to UCX)",
         orphans_.size());
  {
    std::lock_guard<std::mutex> lock(endpoints_mu_);
    if (!endpoints_.empty())
      logf(LogLevel::kWarn, "rdmaps: warning: transport context destroyed with %zu endpoint(s) still open",
           endpoints_.size());
  }
}

void UcxContext::progress_loop() {
  while (!stop_.load(std::memory_order_relaxed)) {
    if (progress() != 0) continue;
    if (options_.wakeup)
      wait_event(std::chrono::milliseconds(10));
    else
      std::this_thread::yield();
  }
}

std::unique_ptr<Listener> UcxContext::listen(const SockAddr& address) {
  return std::make_unique<UcxListener>(*this, address);
}

std::unique_ptr<Endpoint> UcxContext::connect(const SockAddr& address, std::chrono::milliseconds timeout,
                                              const std::string& name, IfRefused if_refused) {
  return UcxEndpoint::connect(*this, address, timeout, name, if_refused);
}

std::unique_ptr<Region> UcxContext::allocate(size_t size, Access access) {
  return UcxRegion::map(context_.get(), nullptr, size, access, true);
}

std::unique_ptr<Region> UcxContext::register_memory(void* data, size_t size, Access access) {
  if (data == nullptr) throw Error(Errc::kInvalidArgument, "cannot register a null pointer");
  return UcxRegion::map(context_.get(), data, size, access, false);
}

// UCX 1.13 looks a received message's id up in its handler table without
// checking that the entry was ever set: an id nobody registered (another
// version's, a bug's) jumped through garbage and killed this process with
// SIGSEGV (AmTest.MessagesForIdsNobodyHandlesAreDroppedAndTheReceiverGoesOn).
// So every id gets a handler, one that drops the message; set_am_handler()
// replaces it for the ids in use. 65536 entries: 1.5 MiB and about 3 ms
// (2.7-3.5 ms to 5.6-7.1 ms to make and destroy a tcp context, this VM) per context.
void UcxContext::guard_am_ids() {
  am_slots_.push_back(AmSlot{this, [this](AmMessage& m) {
                               if (warned_stray_am_.exchange(true)) return;
                               logf(LogLevel::kWarn,
                                    "rdmaps: dropped an active message from %s for an id nothing here handles (a peer "
                                    "of another rdmaps version?); later ones are dropped silently",
                                    m.from ? m.from->peer_name().c_str() : "an unknown peer");
                             }});
  for (uint32_t id = UINT16_MAX + 1; id-- > 0;) bind_am_slot(static_cast<uint16_t>(id), &am_slots_.back());
}

void UcxContext::set_am_handler(uint16_t id, AmHandler handler) {
  am_slots_.push_back(AmSlot{this, std::move(handler)});
  bind_am_slot(id, &am_slots_.back());
}

void UcxContext::bind_am_slot(uint16_t id, AmSlot* slot) {
  ucp_am_handler_param_t params{};
  params.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS | UCP_AM_HANDLER_PARAM_FIELD_CB |
                      UCP_AM_HANDLER_PARAM_FIELD_ARG;
  params.id = id;
  params.flags = UCP_AM_FLAG_WHOLE_MSG;
  params.cb = &UcxContext::on_am;
  params.arg = slot;
  check(ucp_worker_set_am_recv_handler(worker_.get(), &params), "registering an active-message handler",
        "id " + std::to_string(id));
}

ucs_status_t UcxContext::on_am(void* arg, const void* header, size_t header_length, void* data, size_t length,
                               const ucp_am_recv_param_t* param) {
  auto* slot = static_cast<AmSlot*>(arg);
  AmMessage message;
  message.header = header;
  message.header_length = header_length;
  message.length = length;
  message.payload = data;
  message.rendezvous = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  if (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) message.from = slot->context->find(param->reply_ep);
  try {
    slot->handler(message);
  } catch (const std::exception& e) {
    // Never unwind through UCX: report, drop the message, keep serving.
    logf(LogLevel::kError, "rdmaps: active-message handler failed (message dropped): %s", e.what());
  }
  if (message.rendezvous && !message.consumed) slot->context->discard(data, length);
  return UCS_OK;
}

namespace {
// A datatype whose unpacking keeps nothing: rendezvous data nobody takes was
// received into a buffer of the sender's length, memory any peer could make
// this process spend (out of memory, an abort inside UCX's callback). Its
// state is the byte count itself, so that nothing is allocated per message.
ucp_datatype_t discarding_datatype() {
  static const ucp_datatype_t type = [] {
    static const ucp_generic_dt_ops_t ops = {
        .start_pack = [](void*, const void*, size_t) -> void* { return nullptr; },
        .start_unpack = [](void*, void*, size_t count) -> void* {
          return reinterpret_cast<void*>(static_cast<uintptr_t>(count) + 1);  // never null
        },
        .packed_size = [](void* state) -> size_t { return reinterpret_cast<uintptr_t>(state) - 1; },
        .pack = [](void*, size_t, void*, size_t) -> size_t { return 0; },
        .unpack = [](void*, size_t, const void*, size_t) -> ucs_status_t { return UCS_OK; },
        .finish = [](void*) {},
    };
    ucp_datatype_t t = 0;
    check(ucp_dt_create_generic(&ops, nullptr, &t), "creating the discarding datatype", "UCX");
    return t;
  }();
  return type;
}
}  // namespace

void UcxContext::discard(void* data_desc, size_t length) noexcept {
  // UCX 1.13: ucp_am_data_release on rendezvous data trips an assertion at the
  // sender when its acknowledgement arrives; receiving it, into nothing, is safe.
  try {
    ucp_request_param_t params{};
    params.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE;
    params.datatype = discarding_datatype();
    ucs_status_ptr_t sp = ucp_am_recv_data_nbx(worker_.get(), data_desc, nullptr, length, &params);
    if (UCS_PTR_IS_PTR(sp)) release(sp);
  } catch (const std::exception& e) {
    logf(LogLevel::kError, "rdmaps: an active message nobody takes could not be dropped: %s", e.what());
  }
}

Request UcxContext::am_receive(AmMessage& message, Region& region, uint64_t offset) {
  // Named on failure only: every pushed piece and write-back over tcp copied the name.
  const auto from = [&] { return message.from ? message.from->peer_name() : std::string("unknown peer"); };
  if (message.consumed) throw Error(Errc::kInvalidArgument, "active message from " + from() + " was already received");
  if (offset > region.size() || message.length > region.size() - offset)
    throw Error(Errc::kOutOfBounds, "active message of " + std::to_string(message.length) + " bytes from " + from() +
                                        " does not fit at offset " + std::to_string(offset) + " of a " +
                                        std::to_string(region.size()) + "-byte region");
  message.consumed = true;
  char* dst = static_cast<char*>(region.data()) + offset;
  if (!message.rendezvous) {
    // Eager data sits in UCX's bounce buffer: one copy is unavoidable. (An
    // empty one may have no buffer: memcpy from null is undefined even for 0 bytes.)
    if (message.length) std::memcpy(dst, message.payload, message.length);
    return Request();
  }
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
  params.memh = static_cast<UcxRegion&>(region).memh();
  ucs_status_ptr_t sp = ucp_am_recv_data_nbx(worker_.get(), message.payload, dst, message.length, &params);
  if (sp == nullptr) return Request();
  if (UCS_PTR_IS_ERR(sp)) throw error_from(UCS_PTR_STATUS(sp), "receiving an active message", from());
  return Request(this, sp, "active-message receive", message.from);
}

// Requests left in flight are checked one by one, and some never end (sends
// to a worker killed mid-write-back over tcp: a lane's range in 1 MiB
// requests per kill): checked on every turn, a lane's loop slowed with each
// kill. Every kSweepEvery-th turn frees the ones that ended soon enough.
constexpr uint32_t kSweepEvery = 64;

unsigned UcxContext::progress() {
  unsigned events = ucp_worker_progress(worker_.get());
  if (has_orphans_.load(std::memory_order_acquire) &&
      progress_turns_.fetch_add(1, std::memory_order_relaxed) % kSweepEvery == 0)
    sweep_orphans();
  return events;
}

bool UcxContext::wait_event(std::chrono::milliseconds timeout) {
  if (!epoll_.valid()) {
    std::this_thread::yield();
    return false;
  }
  ucs_status_t status = ucp_worker_arm(worker_.get());
  if (status == UCS_ERR_BUSY) return true;  // events already pending: progress them
  check(status, "arming the UCX worker for wake-up", "");
  epoll_event ev{};
  int n = epoll_wait(epoll_.get(), &ev, 1, static_cast<int>(timeout.count()));
  return n > 0;
}

void UcxContext::wait_fd_or_event(int fd, int timeout_ms) {
  pollfd fds[2] = {{fd, POLLIN, 0}, {event_fd_, POLLIN, 0}};
  int count = 1;
  if (event_fd_ >= 0) {
    ucs_status_t status = ucp_worker_arm(worker_.get());
    if (status == UCS_ERR_BUSY) return;  // UCX has events to progress now
    check(status, "arming the UCX worker for wake-up", "");
    count = 2;
  } else {
    timeout_ms = 0;  // no event fd: the caller must keep polling UCX
  }
  ::poll(fds, count, timeout_ms);
}

bool UcxContext::progress_until(const std::function<bool()>& done, std::chrono::steady_clock::time_point deadline) {
  // The deadline is read when idle and every 1024th busy round: traffic of
  // other peers that keeps progress() busy must not stretch it for good.
  for (uint32_t round = 1; !done(); ++round) {
    const bool busy = progress() != 0;
    if ((!busy || round % 1024 == 0) && std::chrono::steady_clock::now() >= deadline) return done();
    if (!busy) std::this_thread::yield();
  }
  return true;
}

void UcxContext::fence() { check(ucp_worker_fence(worker_.get()), "fence", "worker"); }

Request UcxContext::flush() {
  ucp_request_param_t params{};
  ucs_status_ptr_t sp = ucp_worker_flush_nbx(worker_.get(), &params);
  if (sp == nullptr) return Request();
  if (UCS_PTR_IS_ERR(sp)) throw error_from(UCS_PTR_STATUS(sp), "flush", "worker");
  return Request(this, sp, "worker flush", nullptr);
}

RequestEngine::State UcxContext::test(void* handle, Errc* code, std::string* reason) {
  ucs_status_t status = ucp_request_check_status(handle);
  if (status == UCS_INPROGRESS) return State::kPending;
  if (status == UCS_OK) return State::kDone;
  *code = errc_from(status);
  *reason = explain(status);
  return State::kFailed;
}

namespace {
// Frees a request that ended; false while it is still in flight.
bool free_if_complete(void* handle) {
  if (ucp_request_check_status(handle) == UCS_INPROGRESS) return false;
  ucp_request_free(handle);
  return true;
}
}  // namespace

void UcxContext::release(void* handle) noexcept {
  if (free_if_complete(handle)) return;
  std::lock_guard<std::mutex> lock(orphans_mu_);
  try {
    orphans_.push_back(handle);
  } catch (const std::bad_alloc&) {
    return;  // out of memory: left to UCX unfreed (freed in flight, a rendezvous request asserts)
  }
  has_orphans_.store(true, std::memory_order_release);
}

void UcxContext::sweep_orphans() {
  std::vector<std::shared_ptr<void>> unused;  // dropped after the lock: a region's unmapping takes time
  std::lock_guard<std::mutex> lock(orphans_mu_);
  orphan_sweeps_.fetch_add(1, std::memory_order_relaxed);
  std::erase_if(orphans_, free_if_complete);
  std::erase_if(closes_, free_if_complete);
  std::erase_if(retired_, [&](Retired& r) {
    std::erase_if(r.requests, free_if_complete);
    if (!r.requests.empty()) return false;
    unused.push_back(std::move(r.buffers));
    return true;
  });
  has_orphans_.store(!orphans_.empty() || !closes_.empty() || !retired_.empty(), std::memory_order_release);
}

void UcxContext::retire(std::vector<Request>& requests, std::shared_ptr<void> buffers) {
  Retired r;
  r.requests.reserve(requests.size());  // out of memory here, before a handle was taken
  for (auto& request : requests)
    if (void* handle = request.detach(); handle && !free_if_complete(handle)) r.requests.push_back(handle);
  requests.clear();
  if (r.requests.empty()) return;  // nothing reads the buffers any more: they go now
  r.buffers = std::move(buffers);
  std::lock_guard<std::mutex> lock(orphans_mu_);
  retired_.push_back(std::move(r));
  has_orphans_.store(true, std::memory_order_release);
}

void UcxContext::drain(std::chrono::steady_clock::time_point deadline) {
  // Not the closes: a peer that never drives UCX again acknowledges none.
  progress_until(
      [&] {
        std::lock_guard<std::mutex> lock(orphans_mu_);
        return orphans_.empty() && retired_.empty();
      },
      deadline);
}

void UcxContext::drop_retired() {
  std::vector<std::shared_ptr<void>> unused;  // dropped after the lock
  std::lock_guard<std::mutex> lock(orphans_mu_);
  if (retired_.empty()) return;
  // Registered memory cannot outlive the UCX context (its cleanup asserts),
  // nor a remote key the worker: after the grace above they go, and their
  // sends are left to UCX like any released request.
  logf(LogLevel::kWarn,
       "rdmaps: warning: %zu abandoned send(s) still in flight at shutdown, past their grace: their buffers are "
       "freed (left to UCX)",
       retired_.size());
  for (auto& r : retired_) {
    orphans_.insert(orphans_.end(), r.requests.begin(), r.requests.end());
    unused.push_back(std::move(r.buffers));
  }
  retired_.clear();
}

void UcxContext::adopt_close(void* request) noexcept {
  std::lock_guard<std::mutex> lock(orphans_mu_);
  try {
    closes_.push_back(request);
  } catch (const std::bad_alloc&) {
    ucp_request_free(request);  // UCX completes it on its own
    return;
  }
  has_orphans_.store(true, std::memory_order_release);
}

void UcxContext::keep_until_end(std::shared_ptr<void> memory) noexcept {
  if (!memory) return;
  std::lock_guard<std::mutex> lock(orphans_mu_);
  try {
    lingering_.push_back(std::move(memory));
  } catch (const std::bad_alloc&) {
    // Out of memory: it goes now, as before it was kept.
    return;
  }
  // One per departed peer for the process's life: said as it grows, before
  // the mappings or the open files run out and name no cause.
  const size_t kept = lingering_.size();
  if (kept >= 1024 && (kept & (kept - 1)) == 0)
    logf(LogLevel::kWarn,
         "rdmaps: warning: %zu memory regions kept mapped, one per departed peer whose puts are emulated (tcp) and "
         "may still land (Context::keep_until_end): each holds a mapping (vm.max_map_count) and, in a shared-memory "
         "segment, an open file until this process ends; a server whose workers leave this often over tcp is "
         "restarted from its checkpoint to give them back (docs/architecture.md)",
         kept);
}

void UcxContext::give_up_closes() noexcept {
  std::lock_guard<std::mutex> lock(orphans_mu_);
  for (void* request : closes_) ucp_request_free(request);  // UCX completes it on its own
  closes_.clear();
}

void UcxContext::finish_closes(std::chrono::steady_clock::time_point deadline) {
  progress_until(
      [&] {
        std::lock_guard<std::mutex> lock(orphans_mu_);
        return closes_.empty();
      },
      deadline);
  give_up_closes();
  std::lock_guard<std::mutex> lock(orphans_mu_);
  has_orphans_.store(!orphans_.empty() || !retired_.empty(), std::memory_order_release);
}

void UcxContext::track(ucp_ep_h ep, UcxEndpoint* endpoint) {
  std::lock_guard<std::mutex> lock(endpoints_mu_);
  endpoints_[ep] = endpoint;
}

void UcxContext::untrack(ucp_ep_h ep) {
  std::lock_guard<std::mutex> lock(endpoints_mu_);
  endpoints_.erase(ep);
}

const UcxEndpoint* UcxContext::find(ucp_ep_h ep) {
  std::lock_guard<std::mutex> lock(endpoints_mu_);
  auto it = endpoints_.find(ep);
  return it == endpoints_.end() ? nullptr : it->second;
}

MemorySupport UcxContext::memory_support() const { return query_memory_support(context_.get()); }

std::string UcxContext::describe() const {
  unsigned major = 0, minor = 0, release = 0;
  ucp_get_version(&major, &minor, &release);
  std::string out = "ucx " + std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release);
  out += ", transport " + std::string(transport_name(options_.transport));
  if (options_.transport != TransportKind::kAuto)
    out += std::string(" (UCX_TLS=") + transport_tls(options_.transport) + ")";
  else if (const char* tls = std::getenv("UCX_TLS"))
    out += std::string(" (UCX_TLS=") + tls + ")";
  out += options_.progress_thread ? ", progress thread" : ", caller-driven progress";
  out += options_.wakeup ? ", event-fd wake-up" : ", busy polling";
  return out;
}

}  // namespace rdmaps::transport::ucx
