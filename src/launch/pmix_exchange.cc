#include "src/launch/pmix_exchange.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <thread>

#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "rdmaps_config.h"
#include "transport/cancel.h"

#if RDMAPS_HAVE_PMIX
#include <pmix.h>
#endif

namespace rdmaps::launch {

#if RDMAPS_HAVE_PMIX

namespace {

constexpr const char* kAddressKey = "rdmaps.server.address";
// "WORLD SERVERS" from every rank: ranks started with another --servers would
// otherwise read another set of addresses (the rendezvous compares the same).
constexpr const char* kLaunchKey = "rdmaps.launch";

void check(pmix_status_t status, const std::string& call) {
  if (status == PMIX_SUCCESS) return;
  const Errc code = status == PMIX_ERR_TIMEOUT ? Errc::kTimeout : Errc::kUnreachable;
  throw Error(code, "PMIx: " + call + " failed: " + PMIx_Error_string(status));
}

// PMIx_Init/PMIx_Finalize as one scope: every exit path finalizes.
class PmixSession {
 public:
  PmixSession() { check(PMIx_Init(&me_, nullptr, 0), "PMIx_Init"); }
  ~PmixSession() { PMIx_Finalize(nullptr, 0); }
  PmixSession(const PmixSession&) = delete;
  PmixSession& operator=(const PmixSession&) = delete;
  const pmix_proc_t& me() const { return me_; }

 private:
  pmix_proc_t me_{};
};

struct ValueDeleter {
  void operator()(pmix_value_t* v) const { PMIX_VALUE_RELEASE(v); }
};
using Value = std::unique_ptr<pmix_value_t, ValueDeleter>;

// Bounded by `seconds` where given: a key the fence did not bring (a rank
// that never put it) is asked of the PMIx server, which may wait for it for good.
Value get(const pmix_proc_t& proc, const char* key, const std::string& what, int seconds = 0) {
  pmix_value_t* v = nullptr;
  pmix_info_t timeout;
  if (seconds > 0) PMIx_Info_load(&timeout, PMIX_TIMEOUT, &seconds, PMIX_INT);
  check(PMIx_Get(&proc, key, seconds > 0 ? &timeout : nullptr, seconds > 0 ? 1 : 0, &v), "PMIx_Get(" + what + ")");
  return Value(v);
}

// A fence in flight: PMIx reads its arguments and calls back into it until
// it completes, so they live on the heap, beyond a wait that was cancelled.
struct Fence {
  pmix_proc_t job;
  pmix_info_t info[2];
  std::atomic<bool> done{false};
  std::atomic<pmix_status_t> status{PMIX_SUCCESS};
};

void fence_done(pmix_status_t status, void* data) {
  auto* f = static_cast<Fence*>(data);
  f->status.store(status, std::memory_order_relaxed);
  f->done.store(true, std::memory_order_release);
}

// Every rank's puts collected, or `seconds` passed; `late()` once, at
// `late_after`, if it still waits. Non-blocking, waited in slices: Ctrl-C in
// a Python rank (transport::CancelScope) ends the wait at once; PMIx_Fence
// held it until the timeout (300 s by default).
pmix_status_t fence(const pmix_proc_t& job, int seconds, std::chrono::milliseconds late_after,
                    const std::function<void()>& late) {
  auto f = std::make_unique<Fence>();
  f->job = job;
  bool collect = true;
  PMIx_Info_load(&f->info[0], PMIX_COLLECT_DATA, &collect, PMIX_BOOL);
  PMIx_Info_load(&f->info[1], PMIX_TIMEOUT, &seconds, PMIX_INT);
  const pmix_status_t started = PMIx_Fence_nb(&f->job, 1, f->info, 2, fence_done, f.get());
  if (started == PMIX_OPERATION_SUCCEEDED) return PMIX_SUCCESS;  // done at once; no callback comes
  if (started != PMIX_SUCCESS) return started;
  // PMIX_TIMEOUT is a request a PMIx server may not honour: past it and a
  // grace the wait ends here too, as a timeout.
  const auto start = std::chrono::steady_clock::now();
  const auto give_up = start + std::chrono::seconds(seconds) + std::chrono::seconds(5);
  bool said_late = false;
  while (!f->done.load(std::memory_order_acquire)) {
    try {
      if (!said_late && std::chrono::steady_clock::now() >= start + late_after) {
        said_late = true;
        late();
      }
      if (std::chrono::steady_clock::now() >= give_up) {
        f.release();  // NOLINT: as below, PMIx may still call back into it
        return PMIX_ERR_TIMEOUT;
      }
      std::this_thread::sleep_for(
          std::chrono::milliseconds(transport::cancellable_wait_ms(20, "the PMIx address exchange", "PMIx_Fence_nb")));
    } catch (...) {
      f.release();  // NOLINT: PMIx may still call back into it; a few bytes, once per cancelled launch
      throw;
    }
  }
  return f->status.load(std::memory_order_relaxed);
}

}  // namespace

bool have_pmix() { return true; }

std::vector<std::string> pmix_exchange(const Placement& p, const std::string& address,
                                       std::chrono::milliseconds timeout) {
  PmixSession session;
  const pmix_proc_t& me = session.me();
  pmix_proc_t job;
  PMIX_LOAD_PROCID(&job, me.nspace, PMIX_RANK_WILDCARD);
  Value size = get(job, PMIX_JOB_SIZE, "job size");
  if (me.rank != p.rank || size->type != PMIX_UINT32 || size->data.uint32 != p.world_size)
    throw Error(Errc::kInvalidArgument,
                "two launchers disagree about this process: PMIx says rank " + std::to_string(me.rank) + " of " +
                    (size->type == PMIX_UINT32 ? std::to_string(size->data.uint32) : std::string("?")) + ", " +
                    p.rank_var + " says rank " + std::to_string(p.rank) + " of " + std::to_string(p.world_size));

  auto put = [](const char* key, const std::string& text) {
    pmix_value_t value;
    check(PMIx_Value_load(&value, text.c_str(), PMIX_STRING), "PMIx_Value_load");
    const pmix_status_t status = PMIx_Put(PMIX_GLOBAL, key, &value);
    PMIx_Value_destruct(&value);
    check(status, std::string("PMIx_Put(") + key + ")");
  };
  const std::string launch = std::to_string(p.world_size) + " " + std::to_string(p.num_servers);
  put(kLaunchKey, launch);
  if (!address.empty()) put(kAddressKey, address);
  check(PMIx_Commit(), "PMIx_Commit");

  // A fence cannot tell who is missing: past the timeout it waits on for
  // late ranks up to kLateWorkers in all, as the rendezvous waits for late
  // workers (a server that gave up at 120 s ended a launch whose Python
  // workers were still importing torch). A rank that died ends the launch
  // under mpirun and srun -K1.
  const auto wait = std::max<std::chrono::milliseconds>(timeout, kLateWorkers);
  const int seconds = static_cast<int>((wait.count() + 999) / 1000);
  const pmix_status_t fenced = fence(job, seconds, timeout, [&] {
    logf(LogLevel::kWarn,
         "rank %u: the PMIx address exchange still lacks some of the job's %u ranks after %lld s; waiting for "
         "them up to %d s in all (a Python worker that imports torch and loads data first comes late)",
         p.rank, p.world_size, static_cast<long long>(timeout.count() / 1000), seconds);
  });
  if (fenced == PMIX_ERR_TIMEOUT)
    throw Error(Errc::kTimeout, "PMIx: not every process of the job reached the address exchange within " +
                                    std::to_string(seconds) +
                                    " s: did every rank start rdmaps? Ranks slower still need a longer "
                                    "--launch-timeout, or rdmaps.torch.init(timeout=)");
  check(fenced, "PMIx_Fence");

  // Every rank compares itself with rank 0, as at the rendezvous: the one
  // that differs says so, and its exit ends the launch.
  if (me.rank != 0) {
    pmix_proc_t first;
    PMIX_LOAD_PROCID(&first, me.nspace, 0);
    Value v = get(first, kLaunchKey, "how rank 0 was started", seconds);
    const std::string theirs = v->type == PMIX_STRING && v->data.string ? v->data.string : "?";
    if (theirs != launch) {
      const size_t space = theirs.find(' ');
      throw Error(Errc::kInvalidArgument,
                  "PMIx: rank " + std::to_string(me.rank) + " was started with world size " +
                      std::to_string(p.world_size) + " and " + std::to_string(p.num_servers) +
                      " server(s), rank 0 with " + theirs.substr(0, space) + " and " +
                      (space == std::string::npos ? "?" : theirs.substr(space + 1)) +
                      ": one job, one launch (give every rank the same --servers or RDMAPS_NUM_SERVERS)");
    }
  }

  std::vector<std::string> servers;
  for (uint32_t i = 0; i < p.num_servers; ++i) {
    pmix_proc_t server;
    PMIX_LOAD_PROCID(&server, me.nspace, i);
    Value v = get(server, kAddressKey, "the address of server rank " + std::to_string(i), seconds);
    if (v->type != PMIX_STRING || !v->data.string)
      throw Error(Errc::kProtocol, "PMIx: server rank " + std::to_string(i) + "'s address is not a string");
    servers.emplace_back(v->data.string);
  }
  return servers;
}

#else

bool have_pmix() { return false; }

std::vector<std::string> pmix_exchange(const Placement&, const std::string&, std::chrono::milliseconds) {
  throw Error(Errc::kUnsupported, "this build of rdmaps has no PMIx (install libpmix-dev and rebuild)");
}

#endif

}  // namespace rdmaps::launch
