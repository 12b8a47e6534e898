// rdmaps._rdmaps: the Python face of the C++ API. Buffers cross without
// copies (buffer protocol, or an address and a byte count from rdmaps.torch);
// the GIL is released while anything waits on the network.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#ifdef __GLIBCXX__
#include <cxxabi.h>
#endif

#include "python/ext/comm_thread.h"
#include "rdmaps/client.h"
#include "rdmaps/config.h"
#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "rdmaps/server.h"
#include "rdmaps/version.h"
#include "rdmaps_config.h"
#include "src/api/capabilities.h"
#include "src/api/log_sink.h"
#include "src/api/unsaved_model.h"
#include "src/launch/pmix_exchange.h"
#include "src/launch/server_directory.h"
#include "src/launch/server_list.h"
#include "transport/address.h"
#include "transport/cancel.h"
#include "transport/process_id.h"

namespace py = pybind11;
using namespace std::chrono_literals;

namespace rdmaps::python {
namespace {

// Python classes of our errors; set at import.
PyObject* g_error = nullptr;
PyObject* g_invalid_argument = nullptr;
PyObject* g_timeout = nullptr;
PyObject* g_peer_gone = nullptr;
PyObject* g_refused_for_now = nullptr;

PyObject* python_class(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument:
    case Errc::kOutOfBounds:
      return g_invalid_argument;
    case Errc::kTimeout:
      return g_timeout;
    case Errc::kPeerGone:
    case Errc::kUnreachable:
      return g_peer_gone;
    case Errc::kRefusedForNow:
      return g_refused_for_now;
    default:
      return g_error;
  }
}

Config parse_flags(const std::vector<std::string>& flags) {
  Config config;
  std::vector<std::string> rest;
  parse_config(config, flags, &rest);
  if (!rest.empty()) throw Error(Errc::kInvalidArgument, "unknown configuration option '" + rest[0] + "'");
  return config;
}

// Whether a buffer format is float32 in this machine's byte order, in any
// of struct's spellings: numpy and array.array give 'f', ctypes '<f' (it
// names the byte order even where it is the machine's).
bool native_float(const std::string& format) {
  if (format == "f") return true;
  constexpr char own = std::endian::native == std::endian::little ? '<' : '>';
  return format.size() == 2 && format[1] == 'f' && (format[0] == '@' || format[0] == '=' || format[0] == own);
}

// `seconds` as a bound on waits, or an error naming `who`: a cast of inf, nan
// or 1e30 to milliseconds is undefined (it gave "within -9223 s").
std::chrono::milliseconds checked_timeout(const char* who, double seconds) {
  if (!(seconds >= 0.001 && seconds <= 1e9))
    throw Error(Errc::kInvalidArgument, std::string(who) + ": timeout=" + std::to_string(seconds) +
                                            " is not a number of seconds from 0.001 (a millisecond) to 1e9");
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

// The arguments of push/pull/init/declare, taken as objects and checked here:
// pybind11's own refusal lists every signature and names no argument.
std::string name_arg(const py::handle& name, const char* op) {
  if (!py::isinstance<py::str>(name))
    throw py::type_error(std::string(op) + ": name=" + py::repr(name).cast<std::string>() + " is not a str");
  return name.cast<std::string>();
}
py::buffer buffer_arg(const py::handle& value, const char* op, const std::string& name) {
  if (py::isinstance<py::buffer>(value)) return py::reinterpret_borrow<py::buffer>(value);
  const auto type = py::type::of(value);
  const std::string module = py::str(type.attr("__module__")), what = py::str(type.attr("__name__"));
  throw py::type_error(
      std::string(op) + "('" + name + "'): a " + what +
      " is not a float32 buffer (a numpy array, array.array('f'), ...)" +
      (module.rfind("torch", 0) == 0 ? "; a torch tensor: pass tensor.numpy(), or train with rdmaps.torch" : ""));
}

// A float32 C-contiguous view of `buffer`, or a TypeError/ValueError naming
// the operation and tensor.
std::pair<float*, size_t> float_view(const py::buffer& buffer, bool writable, const char* op, const std::string& name) {
  const std::string where = std::string(op) + "('" + name + "')";
  py::buffer_info info;
  try {
    info = buffer.request(writable);
  } catch (const py::error_already_set& e) {
    if (!e.matches(PyExc_BufferError) && !e.matches(PyExc_ValueError)) throw;
    throw py::value_error(where + ": " + (writable ? "the output buffer must be writable: " : "") + e.what());
  }
  // "Xf" that is not native is float32 in the other byte order ('>', '!' or '<').
  if (info.format.size() == 2 && info.format[1] == 'f' && std::strchr("<>!=", info.format[0]) &&
      !native_float(info.format))
    throw py::type_error(where + ": needs float32 data in this machine's byte order (" +
                         (std::endian::native == std::endian::little ? "little" : "big") +
                         "-endian), got buffer format '" + info.format + "'; convert it first");
  if (!native_float(info.format) || info.itemsize != sizeof(float))
    throw py::type_error(where + ": needs float32 data, got buffer format '" + info.format + "' of " +
                         std::to_string(info.itemsize) + "-byte items");
  py::ssize_t expected = info.itemsize;
  for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
    if (info.shape[d] > 1 && info.strides[d] != expected)
      throw py::value_error(where + ": needs contiguous (C-order) data; make a contiguous copy first");
    expected *= info.shape[d];
  }
  return {static_cast<float*>(info.ptr), static_cast<size_t>(info.size)};
}

// A buffer export of `buffer`, held while rdmaps may read or write its
// memory: array.array, bytearray and numpy refuse to resize or free memory
// with one outstanding (BufferError), where a reference to the object alone
// let them move it under a registration or an operation.
py::object pinned(const py::buffer& buffer) {
  PyObject* view = PyMemoryView_FromObject(buffer.ptr());
  if (view == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(view);
}

size_t floats_of_bytes(uint64_t nbytes, const char* op, const std::string& name) {
  if (nbytes % sizeof(float) != 0)
    throw Error(Errc::kInvalidArgument,
                std::string(op) + "('" + name + "'): " + std::to_string(nbytes) + " bytes is not whole float32s");
  return nbytes / sizeof(float);
}

py::dict client_stats_dict(const ClientStats& s, uint64_t messages_rejected) {
  py::dict d;
  d["pushes"] = s.pushes;
  d["push_bytes"] = s.push_bytes;
  d["pulls"] = s.pulls;
  d["pull_bytes"] = s.pull_bytes;
  d["pulls_skipped"] = s.pulls_skipped;
  d["pull_bytes_saved"] = s.pull_bytes_saved;
  d["pull_bytes_in_place"] = s.pull_bytes_in_place;
  d["clocks"] = s.clocks;
  d["clock_wait_seconds"] = s.clock_wait_seconds;
  d["push_paths"] = s.push_paths;
  d["reconnects"] = s.reconnects;
  d["pushes_lost"] = s.pushes_lost;
  d["messages_rejected"] = messages_rejected;  // pushes (and other messages) the servers refused
  d["last_step_seconds"] = s.last_step_seconds;
  d["gpu_path"] = s.gpu_path;
  d["servers_resumed"] = s.servers_resumed;
  d["servers_holding"] = s.servers_holding;
  return d;
}

py::dict server_stats_dict(const ServerStats& s) {
  py::dict d;
  d["pushes"] = s.pushes;
  d["bytes_in"] = s.bytes_in;
  d["bytes_out"] = s.bytes_out;
  d["pulls"] = s.pulls;
  d["clocks"] = s.clocks;
  d["rejected"] = s.rejected;
  d["dropped"] = s.dropped;
  d["min_clock"] = s.min_clock;
  d["workers_left"] = s.workers_left;
  d["workers_lost"] = s.workers_lost;
  d["lanes"] = s.lanes;
  d["longest_setup_pause_us"] = s.longest_setup_pause_us;
  d["checkpoints"] = s.checkpoints;
  d["checkpoint_updates"] = s.checkpoint_updates;
  d["final_checkpoint_failed"] = s.final_checkpoint_failed;
  d["resumed_updates"] = s.resumed_updates;
  d["applied_per_worker"] = s.applied_per_worker;
  d["rejected_per_worker"] = s.rejected_per_worker;
  d["bytes_in_per_worker"] = s.bytes_in_per_worker;
  d["staleness"] = s.staleness;
  d["staleness_sum"] = s.staleness_sum;
  d["staleness_max"] = s.staleness_max;
  d["staleness_p50"] = s.staleness_quantile(0.5);
  d["staleness_p99"] = s.staleness_quantile(0.99);
  d["max_clock"] = s.max_clock;
  d["workers_connected"] = s.workers_connected;
  py::dict reasons;
  for (const auto& [reason, count] : s.rejected_by_reason) reasons[py::str(reason)] = count;
  d["rejected_by_reason"] = reasons;
  d["rule"] = s.rule;
  d["stall_warnings"] = s.stall_warnings;
  d["checkpoint_failures"] = s.checkpoint_failures;
  return d;
}

bool interpreter_finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

// Runs `f` with the GIL released and takes the GIL back in plain code, never
// in a destructor (pybind11's gil_scoped_release). CPython ends a thread
// other than the finalizing one that asks for the GIL while the interpreter
// finalizes (a daemon thread still in a call at exit) with pthread_exit,
// which unwinds its stack: out of that noexcept destructor the process
// aborted ("terminate called without an active exception"), and the unwind
// would drop the Python objects our frames hold without the GIL. So such a
// thread sleeps until the process ends instead, as CPython 3.14 does with
// its own (pybind11's advice, disarm() after _Py_IsFinalizing(), leaves a
// race with finalization starting after that check). An exception of `f`
// is raised once the GIL is back.
template <typename F>
void without_gil(F&& f) {
  PyThreadState* state = PyEval_SaveThread();
  std::exception_ptr error;
  try {
    f();
  } catch (...) {
    error = std::current_exception();
  }
#ifdef __GLIBCXX__
  try {
    PyEval_RestoreThread(state);
  } catch (abi::__forced_unwind&) {
    for (;;) std::this_thread::sleep_for(24h);  // leaving this handler but by a rethrow aborts
  }
#else
  PyEval_RestoreThread(state);
#endif
  if (error) std::rethrow_exception(error);
}

// How often a wait looks for a pending signal: Ctrl-C answers within this.
constexpr std::chrono::milliseconds kSignalCheck{50};

// A Client plus the thread that runs its operations.
class Worker {
 public:
  Worker(std::vector<std::string> servers, uint32_t worker, const std::vector<std::string>& flags,
         double timeout_seconds, const std::string& metrics) {
    ClientOptions o;
    o.metrics = metrics;
    o.servers = std::move(servers);
    o.worker = worker;
    o.config = parse_flags(flags);
    o.timeout = checked_timeout("Worker", timeout_seconds);
    if (o.servers.empty()) throw Error(Errc::kInvalidArgument, "Worker: the server list is empty");
    client_ = std::make_unique<Client>(o);
  }
  ~Worker() {
    if (in_forked_child()) {
      let_go_of_the_parents();
      return;
    }
    if (abandoned_ && client_) {
      client_->interrupt();  // what a signal abandoned ends now, not at the worker's timeout
    }
    // Joining the comm thread with the GIL held hung for good when it logged
    // to Python meanwhile (its sink takes the GIL), as close() knows.
    without_gil([this] {
      comm_.reset();
      client_.reset();
    });
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void declare(const std::string& name, size_t floats) {
    if (!comm_) {
      Use use(*this);
      no_connect_under_way();
      if (!comm_) return client_->declare(name, floats);
    }
    throw Error(Errc::kInvalidArgument, "declare('" + name + "') after connect()");
  }
  /// Before connect() the client takes it directly, as Client::set_learning_rate
  /// and the C ABI do (it went to a comm thread not made yet: "call connect() first").
  void set_learning_rate(std::optional<float> lr) {
    if (!comm_) {
      Use use(*this);
      no_connect_under_way();
      if (!comm_) return client_->set_learning_rate(lr);
    }
    wait(comm().submit_learning_rate(lr, true));
  }
  /// Client::register_memory(); `keep` (what owns the memory, or an export
  /// of it: pinned()) is held until the client is gone, which is the promise
  /// that call asks for. After
  /// connect() the comm thread registers it, in turn with the operations
  /// queued before; the client may hold it even if that failed.
  void register_memory(float* data, size_t floats, py::object keep) {
    if (!comm_) {
      Use use(*this);
      no_connect_under_way();
      if (!comm_) {
        client_->register_memory({data, floats});
        registered_.push_back(std::move(keep));
        return;
      }
    }
    registered_.push_back(keep);
    run(CommThread::Kind::kRegisterMemory, {}, data, floats, std::move(keep));
  }
  void connect() {
    if (comm_) return;
    check_process();
    // Until comm_ exists, not only until the client connected: a call that
    // came between ran on the connected client on its own thread, the GIL held.
    ++connecting_;
    struct Connected {
      int& connecting;
      ~Connected() { --connecting; }
    } connected{connecting_};
    {
      // On a thread of its own, so that a signal handler that raises
      // (Ctrl-C) runs while it waits: it interrupts the connect, which ends
      // soon (Client::interrupt), and raises here. close() interrupts it too.
      Use use(*this);
      auto connecting = std::async(std::launch::async, [this] {
        const std::lock_guard<std::timed_mutex> lock(connect_mu_);
        client_->connect();
      });
      for (;;) {
        bool ready = false;
        without_gil([&] { ready = connecting.wait_for(kSignalCheck) == std::future_status::ready; });
        if (ready) break;
        if (PyErr_CheckSignals() != 0) {
          client_->interrupt();
          without_gil([&] { connecting.wait(); });
          throw py::error_already_set();
        }
      }
      connecting.get();
    }
    if (closing_) throw Error(Errc::kInvalidArgument, "the worker was closed while it connected");
    // Another thread's connect() that waited meanwhile made it: a second
    // replaced the first's under the calls already queued on it.
    if (comm_) return;
    comm_ = std::make_unique<CommThread>(*client_);
  }

  /// The thread that runs this worker's operations; exists from connect() on.
  CommThread& comm() {
    if (!comm_) throw Error(Errc::kInvalidArgument, "call connect() first");
    check_process();
    return *comm_;
  }
  CommThread::Ticket submit(CommThread::Kind kind, const std::string& name = {}, void* data = nullptr,
                            size_t floats = 0, bool awaited = false) {
    return comm().submit(kind, name, data, floats, awaited);
  }
  /// Waits for the operation; a signal handler that raises (Ctrl-C) ends the
  /// wait, not the operation: `buffer`, the memory it reads or writes (an
  /// export of it: pinned()), stays referenced here until it finished.
  void wait(CommThread::Ticket t, py::object buffer = {}) {
    CommThread& c = comm();
    interruptible(t, std::move(buffer), [&] { return c.wait_for(t, kSignalCheck); });
  }
  void run(CommThread::Kind kind, const std::string& name = {}, void* data = nullptr, size_t floats = 0,
           py::object buffer = {}) {
    wait(submit(kind, name, data, floats, true), std::move(buffer));
  }
  void wait_all() {
    if (!comm_) return;
    const CommThread::Ticket last = comm_->last_submitted();
    interruptible(last, {}, [&] { return comm_->wait_all_for(last, kSignalCheck); });
  }
  size_t pending() const { return comm_ ? comm_->pending() : 0; }
  uint64_t clock_value() {
    wait_all();
    return snapshot().clock;
  }
  // Waits for the queued operations but not on their errors: after a server
  // died, pushes_lost is what one reads.
  py::dict stats() {
    const CommThread::Snapshot s = snapshot();
    return client_stats_dict(s.stats, s.messages_rejected);
  }
  // Sends the goodbye; the worker is unusable afterwards. Calls in progress on
  // other threads are interrupted (they raise rdmaps.Error, code 'cancelled')
  // and waited for: freeing the client under them crashed the process. So are
  // operations whose wait a signal ended (Ctrl-C): the process then exits at
  // once instead of after the worker's timeout.
  void close() {
    if (closing_) return;
    closing_ = true;
    if (in_forked_child()) return let_go_of_the_parents();
    if (client_ && (calls_ > 0 || abandoned_)) client_->interrupt();
    // A signal handler (SIGTERM: close) runs inside a wait of this thread's
    // own call, which cannot end under it: waiting for it here hung for good.
    // That call ends interrupted and takes the worker down as it returns.
    if (std::find(users_.begin(), users_.end(), std::this_thread::get_id()) != users_.end()) {
      tear_down_when_idle_ = true;
      return;
    }
    while (calls_ > 0) {
      // A call on a thread that finalization ends never returns (without_gil):
      // the client stays, as it may be in use until that thread stops.
      if (interpreter_finalizing()) return;
      without_gil([] { std::this_thread::sleep_for(std::chrono::milliseconds(1)); });
    }
    tear_down();
  }
  bool closed() const { return !client_ || closing_; }
  std::string metrics_address() const { return client_ ? client_->metrics_address() : ""; }

 private:
  // Counts a call that releases the GIL while it uses client_ or comm_, so
  // that close() on another thread waits for it (taken and dropped with the GIL held).
  class Use {
   public:
    explicit Use(Worker& w) : w_(w) {
      w_.users_.push_back(std::this_thread::get_id());
      ++w_.calls_;
    }
    ~Use() {
      --w_.calls_;
      w_.users_.erase(std::find(w_.users_.begin(), w_.users_.end(), std::this_thread::get_id()));
      if (w_.tear_down_when_idle_ && w_.calls_ == 0) {
        w_.tear_down_when_idle_ = false;
        w_.tear_down();
      }
    }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;

   private:
    Worker& w_;
  };

  // The comm thread's counters, taken by it after the operations queued so
  // far: read from this thread, the Client would refuse the call while the
  // comm thread runs one (a monitoring thread made a trainer's push fail).
  CommThread::Snapshot snapshot() {
    // The whole call: a close() from a signal handler inside it takes the
    // worker down after take_snapshot(), not under it.
    Use use(*this);
    if (!comm_) {
      no_connect_under_way();
      if (!comm_) return {client_->stats(), client_->messages_rejected(), client_->clock_value(), nullptr};
    }
    const CommThread::Ticket t = comm().submit_snapshot();
    interruptible(t, {}, [&] { return comm_->finished_for(t, kSignalCheck); });
    return comm_->take_snapshot(t);
  }

  // Every call ended: the client and comm thread go, then the buffers they used.
  void tear_down() noexcept {
    // Taken out with the GIL held: a thread reading pending, closed or
    // metrics_address meanwhile (they hold no Use) sees none, not one being
    // destroyed without the GIL.
    std::unique_ptr<CommThread> comm = std::move(comm_);
    std::unique_ptr<Client> client = std::move(client_);
    without_gil([&] {
      comm.reset();  // before the client its thread uses
      client.reset();
    });
    in_flight_.clear();  // every operation finished: their buffers may go
    registered_.clear();
    stranded_.clear();
  }

  // Before the comm thread exists, a connect() on another thread may be using
  // the client: a call made meanwhile (stats(), declare(), register_memory())
  // was refused as another thread's, or made the connect fail. Ctrl-C reaches
  // the wait (a connect waits for its server up to the timeout). The caller
  // holds a Use.
  void no_connect_under_way() {
    check_process();
    while (connecting_ > 0) {  // changed with the GIL held: read between naps without it
      without_gil([] { std::this_thread::sleep_for(std::chrono::milliseconds(1)); });
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
    if (closing_ || !client_) throw Error(Errc::kInvalidArgument, "the worker was closed");
  }

  bool in_forked_child() const { return owner_pid_ != transport::this_process_id(); }
  // A forked child has no comm thread to join (joining it, or destroying its
  // condition variables, hung for good); the connections are the parent's,
  // which Client's destructor leaves alone there.
  void let_go_of_the_parents() {
    static_cast<void>(comm_.release());
    client_.reset();
  }

  void check_process() const {
    if (owner_pid_ != transport::this_process_id())
      throw Error(Errc::kInvalidArgument, "this worker belongs to process " + std::to_string(owner_pid_) +
                                              ", not this forked child: a child makes its own rdmaps.Worker");
  }

  template <typename WaitFor>
  void interruptible(CommThread::Ticket ticket, py::object buffer, WaitFor&& wait_for) {
    check_process();
    Use use(*this);
    for (;;) {
      bool done = false;
      try {
        without_gil([&] { done = wait_for(); });
      } catch (const Error& e) {
        // Failed, not refused: a send of it may still be under way (a stopped
        // server) and read the buffer until the client is destroyed (client.h).
        if (buffer && e.code() != Errc::kInvalidArgument) stranded_.push_back(std::move(buffer));
        throw;
      }
      if (done) break;
      if (PyErr_CheckSignals() != 0) {
        if (buffer) in_flight_.emplace(ticket, std::move(buffer));
        abandoned_ = true;
        throw py::error_already_set();
      }
    }
    // Buffers of operations whose wait was interrupted, now finished, may go.
    const CommThread::Ticket finished = comm_->finished();
    in_flight_.erase(in_flight_.begin(), in_flight_.upper_bound(finished));
  }

  // Buffers of interrupted waits, by ticket; declared first so that they go
  // only after comm_ finished every operation.
  std::multimap<CommThread::Ticket, py::object> in_flight_;
  std::vector<py::object> registered_;  // register_memory()'s owners: also go after client_
  std::vector<py::object> stranded_;    // buffers of failed operations: also go after client_
  std::unique_ptr<Client> client_;
  std::unique_ptr<CommThread> comm_;
  const pid_t owner_pid_ = transport::this_process_id();
  std::timed_mutex connect_mu_;         // held by connect()'s thread while it uses the client
  int connecting_ = 0;                  // connect() calls under way (GIL held to change it)
  int calls_ = 0;                       // Use: calls in progress, GIL held to change it
  std::vector<std::thread::id> users_;  // Use: the threads of those calls
  bool tear_down_when_idle_ = false;    // close() from inside a call (a signal handler): the last call ends it
  bool closing_ = false;                // close() began: no new call starts
  bool abandoned_ = false;              // a signal ended a wait: its operation is left to close()
};

Worker& live(Worker& w) {
  if (w.closed()) throw Error(Errc::kInvalidArgument, "the worker was closed");
  return w;
}

// push, init or pull (`op`) of `values` as tensor `name`, both checked first.
void run_on_buffer(Worker& w, CommThread::Kind kind, const char* op, const py::object& name_object,
                   const py::object& values) {
  const std::string name = name_arg(name_object, op);
  const py::buffer b = buffer_arg(values, op, name);
  auto [p, n] = float_view(b, kind == CommThread::Kind::kPull, op, name);
  live(w).run(kind, name, p, n, pinned(b));
}

class PyServer {
 public:
  explicit PyServer(const ServerOptions& options) : server_(std::make_unique<Server>(options)) {}
  // Destroyed without the GIL: its threads (the metrics endpoint's, UCX's)
  // may be logging to Python (rdmaps.log_to_python), which takes the GIL,
  // while this joins them.
  // (A forked child's copy is left to the child's exit by ~Server.)
  ~PyServer() {
    without_gil([this] { server_.reset(); });
  }
  std::string address() const { return server_->address(); }
  std::string metrics_address() const { return server_->metrics_address(); }
  // Runs the server on a thread of its own so that Ctrl-C reaches Python.
  void serve() {
    std::exception_ptr error;
    std::atomic<bool> finished{false};
    std::thread runner([&] {
      try {
        server_->run();
      } catch (...) {
        error = std::current_exception();
      }
      finished = true;
    });
    // A daemon thread still in serve() at interpreter exit is ended when it
    // takes the GIL back (CPython exits the thread, unwinding its stack). So
    // the GIL is taken back in plain code, never in a destructor (unwinding
    // out of one terminates the process), and the runner is stopped and joined
    // on that path too.
    struct JoinOnExit {
      Server& server;
      std::thread& runner;
      ~JoinOnExit() {
        if (!runner.joinable()) return;
        server.stop();
        runner.join();
      }
    } join_on_exit{*server_, runner};
    for (;;) {
      PyThreadState* state = PyEval_SaveThread();
      for (int i = 0; i < 10 && !finished; ++i) std::this_thread::sleep_for(10ms);
      PyEval_RestoreThread(state);
      if (finished) break;
      if (PyErr_CheckSignals() != 0) {
        server_->stop();
        state = PyEval_SaveThread();
        runner.join();
        PyEval_RestoreThread(state);
        throw py::error_already_set();
      }
    }
    runner.join();
    if (error) std::rethrow_exception(error);
    // As the C API and rdmaps-server: an rdmaps.torch server rank exited 0 with the model unsaved.
    throw_if_model_unsaved(server_->stats());
  }
  void stop() { server_->stop(); }
  py::dict stats() const { return server_stats_dict(server_->stats()); }

 private:
  std::unique_ptr<Server> server_;
};

launch::Environment environment_of(const std::map<std::string, std::string>& env) {
  return [env](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
}

// rdmaps.launcher's Placement fields; None when no launcher variable is set.
py::object detect_placement(const std::map<std::string, std::string>& env, uint32_t num_servers) {
  auto p = launch::detect(environment_of(env), num_servers);
  if (!p) return py::none();
  py::dict d;
  d["rank"] = p->rank;
  d["world_size"] = p->world_size;
  d["num_servers"] = p->num_servers;
  d["source"] = p->source;
  d["servers"] = py::tuple(py::cast(p->servers));
  d["pmix"] = p->pmix;
  d["master_addr"] = p->master_addr;
  d["master_port"] = p->master_port;
  d["launch_id"] = p->launch_id;
  return d;
}

// The C++ tools' exchange (RDMAPS_SERVERS, PMIx or the rendezvous), so that
// Python ranks and rdmaps-server share one launch (mpirun -np 1 rdmaps-server
// : -np 4 python3 train.py) and one rendezvous protocol. Rank 0 hosts the
// rendezvous for as long as this object lives.
class PyServerDirectory {
 public:
  /// `flags`: the job's configuration (rdmaps.config_flags), for its secret.
  PyServerDirectory(const std::map<std::string, std::string>& env, uint32_t num_servers, double timeout_s,
                    const std::vector<std::string>& flags)
      : env_(environment_of(env)), placement_(placement_of(env_, num_servers)) {
    const auto timeout = checked_timeout("rdmaps.torch.init", timeout_s);
    std::string secret = parse_flags(flags).secret;
    // As the C++ programs' launched ranks: on a loopback MASTER_ADDR too, where
    // every user of the host reaches the rendezvous and the servers, and one
    // without the secret registered a server of its own for the workers.
    launch::require_secret(!secret.empty());
    without_gil(
        [&] { directory_ = std::make_unique<launch::ServerDirectory>(placement_, timeout, std::move(secret), env_); });
  }
  // Without the GIL: rank 0's rendezvous thread, joined here, may be logging
  // to Python (rdmaps.log_to_python) a rank it refuses, which takes the GIL.
  ~PyServerDirectory() {
    without_gil([this] { directory_.reset(); });
  }
  std::string listen_address() const { return directory_->listen_address(); }
  /// A server passes the address it bound, a worker ""; every server's, in index order.
  std::vector<std::string> exchange(const std::string& bound) {
    const std::string address = bound.empty() ? "" : launch::advertised_address(placement_, bound, env_);
    // On a thread of its own, as Worker::connect: Ctrl-C ends the rendezvous's
    // waits (transport::CancelScope) and raises here; it was taken only after
    // the whole timeout (300 s) when rank 0 never came.
    std::atomic<bool> cancel{false};
    auto exchanging = std::async(std::launch::async, [&] {
      const transport::CancelScope scope(&cancel);
      return directory_->exchange(address);
    });
    for (;;) {
      bool ready = false;
      without_gil([&] { ready = exchanging.wait_for(kSignalCheck) == std::future_status::ready; });
      if (ready) return exchanging.get();
      if (PyErr_CheckSignals() != 0) {
        cancel = true;
        without_gil([&] { exchanging.wait(); });
        throw py::error_already_set();
      }
    }
  }

 private:
  static launch::Placement placement_of(const launch::Environment& env, uint32_t num_servers) {
    auto p = launch::detect(env, num_servers);
    if (!p) throw Error(Errc::kInvalidArgument, "no launcher variables: nothing to exchange addresses with");
    return *p;
  }

  launch::Environment env_;
  launch::Placement placement_;
  std::unique_ptr<launch::ServerDirectory> directory_;
};

}  // namespace
}  // namespace rdmaps::python

PYBIND11_MODULE(_rdmaps, m) {
  using namespace rdmaps;
  using namespace rdmaps::python;
  using Kind = CommThread::Kind;
  m.doc() = "rdmaps: parameter server over one-sided RDMA (UCX). Use the rdmaps package, not this module.";
  // Another build's librdmaps (LD_LIBRARY_PATH set by a module system
  // overrides this extension's run path) would crash on its first struct.
  if (const std::string mismatch = abi_mismatch(); !mismatch.empty()) throw py::import_error("rdmaps: " + mismatch);
  // The build's version (PEP 440): "0.1.0+g1a2b3c4d5e6f" from a git checkout.
  m.attr("__version__") = rdmaps_build_version();
  m.attr("have_cuda") = static_cast<bool>(RDMAPS_HAVE_CUDA);
  m.attr("have_pmix") = launch::have_pmix();
  m.attr("max_servers") = kMaxServers;
  m.attr("_max_workers") = kMaxWorkers;  // worker ids are below it (rdmaps.Worker checks)
  // Read now, as the programs read it at start: a bad RDMAPS_LOG_LEVEL was said at the first log line only,
  // never in a worker process that logs none.
  static_cast<void>(log_level());

  g_error = PyErr_NewException("rdmaps.Error", PyExc_RuntimeError, nullptr);
  auto make = [&](const char* name, PyObject* builtin) {
    py::tuple bases = py::make_tuple(py::handle(g_error), py::handle(builtin));
    return PyErr_NewException(name, bases.ptr(), nullptr);
  };
  g_invalid_argument = make("rdmaps.InvalidArgument", PyExc_ValueError);
  g_timeout = make("rdmaps.Timeout", PyExc_TimeoutError);
  g_peer_gone = make("rdmaps.PeerGone", PyExc_ConnectionError);
  g_refused_for_now = make("rdmaps.RefusedForNow", PyExc_ConnectionRefusedError);
  m.attr("Error") = py::handle(g_error);
  m.attr("InvalidArgument") = py::handle(g_invalid_argument);
  m.attr("Timeout") = py::handle(g_timeout);
  m.attr("PeerGone") = py::handle(g_peer_gone);
  m.attr("RefusedForNow") = py::handle(g_refused_for_now);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      // Not strictly UTF-8: a message may quote bytes of a file name, a
      // variable or a peer, and a strict decode raised UnicodeDecodeError
      // in place of the error.
      const char* what = e.what();
      auto text = py::reinterpret_steal<py::object>(
          PyUnicode_DecodeUTF8(what, static_cast<Py_ssize_t>(std::strlen(what)), "backslashreplace"));
      if (!text) return;  // out of memory: raised as such
      py::object error = py::reinterpret_borrow<py::object>(python_class(e.code()))(text);
      error.attr("code") = errc_name(e.code());
      PyErr_SetObject(python_class(e.code()), error.ptr());
    }
  });

  m.def(
      "_capabilities_json", [] { return to_json(probe_capabilities()); },
      "rdmaps-info --json: UCX memory types, RDMA ports, CUDA devices, the GPU path.");
  m.def(
      "describe_config", [](const std::vector<std::string>& flags) { return describe(parse_flags(flags)); },
      py::arg("flags"), "The configuration these flags and RDMAPS_* variables give, one field per line.");

  m.def(
      "_set_log_level", [](const std::string& name) { set_log_level(parse_log_level(name, "rdmaps.set_log_level")); },
      py::arg("level"));
  // The sink runs on library threads and takes the GIL for each line, so it
  // is a concurrent sink (the GIL serializes it): a thread that holds the GIL
  // and logs (a Server constructor resuming) never waits for a library lock
  // held by a thread that waits for the GIL. The handler goes with the GIL
  // retaken. Python removes it at exit (rdmaps.log_to_python), before the
  // interpreter goes.
  struct PythonHandler {
    py::object call;
    ~PythonHandler() {
      py::gil_scoped_acquire gil;
      call = py::object();
    }
  };
  m.def(
      "_set_log_handler",
      [](py::object handler) {
        LogSink sink;
        if (!handler.is_none()) {
          auto held = std::make_shared<PythonHandler>();
          held->call = std::move(handler);
          sink = [held](LogLevel level, const std::string& line) {
            py::gil_scoped_acquire gil;
            try {
              held->call(log_level_name(level), line);
            } catch (py::error_already_set& e) {
              e.discard_as_unraisable("rdmaps log handler");
            }
          };
        }
        // The old handler may be mid-line on another thread.
        without_gil([&] { set_concurrent_log_sink(std::move(sink)); });
      },
      py::arg("handler"));
  m.def("_server_list", &launch::server_list, py::arg("text"), py::arg("source"),
        "The entries of \"host:port,host:port\", each checked (src/launch/server_list.h).");
  m.def("_check_server_list", &launch::check_server_list, py::arg("entries"), py::arg("source"),
        "The same checks for entries given one by one.");
  m.def(
      "_check_address",
      [](const std::string& text, const std::string& source) {
        try {
          transport::split_host_port(text);
        } catch (const Error& e) {
          throw Error(e.code(), source + ": " + e.what());
        }
      },
      py::arg("text"), py::arg("source"), "Refuses a HOST:PORT that is none, naming `source`.");
  m.def("_detect_placement", &detect_placement, py::arg("env"), py::arg("num_servers"),
        "Rank, size and role from the launcher variables in env (rdmaps.launcher.detect).");
  py::class_<PyServerDirectory>(
      m, "_ServerDirectory", "How the ranks of a launch learn the servers' addresses (src/launch/server_directory.h).")
      .def(py::init<const std::map<std::string, std::string>&, uint32_t, double, const std::vector<std::string>&>(),
           py::arg("env"), py::arg("num_servers"), py::arg("timeout"), py::arg("flags"))
      .def("listen_address", &PyServerDirectory::listen_address)
      .def("exchange", &PyServerDirectory::exchange, py::arg("bound"),
           "Servers pass the address they bound (others \"\"); returns every server's, in index order.");
  m.def(
      "_advertised_address",
      [](const std::map<std::string, std::string>& env, uint32_t num_servers, const std::string& bound) {
        auto e = environment_of(env);
        auto p = launch::detect(e, num_servers);
        if (!p) throw Error(Errc::kInvalidArgument, "no launcher variables: no address to advertise");
        return launch::advertised_address(*p, bound, e);
      },
      py::arg("env"), py::arg("num_servers"), py::arg("bound"),
      "The address other hosts reach a server bound to `bound` at (src/launch/server_directory.h).");

  py::class_<Worker>(m, "Worker", "A worker's connection to the servers (see rdmaps.Worker).")
      .def(py::init<std::vector<std::string>, uint32_t, const std::vector<std::string>&, double, const std::string&>(),
           py::arg("servers"), py::arg("worker"), py::arg("flags") = std::vector<std::string>{},
           py::arg("timeout") = 60.0, py::arg("metrics") = "")
      .def_property_readonly("metrics_address", &Worker::metrics_address, "host:port of GET /metrics (\"\" when off).")
      .def(
          "declare",
          [](Worker& w, const py::object& name, size_t floats) { live(w).declare(name_arg(name, "declare"), floats); },
          py::arg("name"), py::arg("floats"))
      .def(
          "register_memory",
          [](Worker& w, const py::object& buffer) {
            const py::buffer b = buffer_arg(buffer, "register_memory", "buffer");
            auto [p, n] = float_view(b, true, "register_memory", "buffer");
            live(w).register_memory(p, n, pinned(b));
          },
          py::arg("buffer"),
          "Float32 memory pulls may land in without a copy (by message over tcp, by put where put_landing "
          "allows); the worker holds the buffer until closed. After connect() it returns once every server "
          "thread took it.")
      .def("_register_memory",
           [](Worker& w, uintptr_t address, uint64_t nbytes, py::object keep) {
             live(w).register_memory(reinterpret_cast<float*>(address),
                                     floats_of_bytes(nbytes, "register_memory", "tensor"), std::move(keep));
           })
      .def("connect", [](Worker& w) { live(w).connect(); })
      .def(
          "push",
          [](Worker& w, const py::object& name, const py::object& values) {
            run_on_buffer(w, Kind::kPush, "push", name, values);
          },
          py::arg("name"), py::arg("values"))
      .def(
          "init",
          [](Worker& w, const py::object& name, const py::object& values) {
            run_on_buffer(w, Kind::kInit, "init", name, values);
          },
          py::arg("name"), py::arg("values"))
      .def(
          "pull",
          [](Worker& w, const py::object& name, const py::object& values) {
            run_on_buffer(w, Kind::kPull, "pull", name, values);
          },
          py::arg("name"), py::arg("values"))
      .def(
          "pull_many",
          [](Worker& w, const py::object& tensors) {
            if (!py::isinstance<py::iterable>(tensors))
              throw py::type_error("pull_many: tensors=" + py::repr(tensors).cast<std::string>() +
                                   " is not a list of (name, buffer) pairs");
            std::vector<PullTarget> targets;
            py::list exports;
            for (const py::handle item : py::reinterpret_borrow<py::iterable>(tensors)) {
              // Any pair: a tuple, or a list as pybind11's own conversion took.
              if (!py::isinstance<py::sequence>(item) || py::isinstance<py::str>(item) || py::len(item) != 2)
                throw py::type_error("pull_many: " + py::repr(item).cast<std::string>() +
                                     " is not a (name, buffer) pair");
              const auto pair = py::reinterpret_borrow<py::sequence>(item);
              const std::string name = name_arg(pair[0], "pull_many");
              const py::buffer b = buffer_arg(pair[1], "pull_many", name);
              auto [p, n] = float_view(b, true, "pull_many", name);
              targets.push_back({name, std::span<float>(p, n)});
              exports.append(pinned(b));
            }
            Worker& live_worker = live(w);
            live_worker.wait(live_worker.comm().submit_pulls(std::move(targets), true), std::move(exports));
          },
          py::arg("tensors"),
          "Pulls [(name, buffer), ...] with at most one request per server lane (a whole model after a step).")
      // Address-based forms for rdmaps.torch, which checks dtype, layout and
      // device first and keeps the tensor alive until the ticket is waited on.
      .def("_submit_push",
           [](Worker& w, const std::string& name, uintptr_t address, uint64_t nbytes) {
             return live(w).submit(Kind::kPush, name, reinterpret_cast<void*>(address),
                                   floats_of_bytes(nbytes, "push", name));
           })
      .def("_submit_pull",
           [](Worker& w, const std::string& name, uintptr_t address, uint64_t nbytes) {
             return live(w).submit(Kind::kPull, name, reinterpret_cast<void*>(address),
                                   floats_of_bytes(nbytes, "pull", name));
           })
      .def("_submit_init",
           [](Worker& w, const std::string& name, uintptr_t address, uint64_t nbytes) {
             return live(w).submit(Kind::kInit, name, reinterpret_cast<void*>(address),
                                   floats_of_bytes(nbytes, "init", name));
           })
      .def("_submit_pulls",
           [](Worker& w, const std::vector<std::tuple<std::string, uintptr_t, uint64_t>>& tensors) {
             std::vector<PullTarget> targets;
             targets.reserve(tensors.size());
             for (const auto& [name, address, nbytes] : tensors)
               targets.push_back(
                   {name, std::span<float>(reinterpret_cast<float*>(address), floats_of_bytes(nbytes, "pull", name))});
             return live(w).comm().submit_pulls(std::move(targets));
           })
      .def("_submit_clock", [](Worker& w) { return live(w).submit(Kind::kClock); })
      .def("_submit_learning_rate",
           [](Worker& w, std::optional<float> lr) { return live(w).comm().submit_learning_rate(lr); })
      .def(
          "set_learning_rate", [](Worker& w, std::optional<float> lr) { live(w).set_learning_rate(lr); }, py::arg("lr"),
          "Later pushes carry this rate; the servers apply it instead of theirs (None: theirs again). At 0 a push "
          "changes no parameter but is still a step: momentum and the mean square take its gradient.")
      .def(
          "wait", [](Worker& w, uint64_t ticket) { live(w).wait(ticket); }, py::arg("ticket"))
      .def("wait_all", [](Worker& w) { live(w).wait_all(); })
      .def("clock", [](Worker& w) { live(w).run(Kind::kClock); })
      .def("barrier", [](Worker& w) { live(w).run(Kind::kBarrier); })
      .def_property_readonly("clock_value", [](Worker& w) { return live(w).clock_value(); })
      .def_property_readonly("pending", &Worker::pending)
      .def("stats", [](Worker& w) { return live(w).stats(); })
      .def("close", &Worker::close)
      .def_property_readonly("closed", &Worker::closed);

  py::class_<PyServer>(m, "Server", "A parameter server (see rdmaps.Server).")
      .def(py::init([](const std::string& listen, uint32_t index, uint32_t servers, uint32_t workers,
                       const std::vector<std::string>& flags, bool rule_from_workers, bool log_connections,
                       double stats_interval, bool exit_when_done, bool insecure, const std::string& metrics,
                       uint64_t max_bytes, double stall_warning) {
             if (!(stats_interval >= 0 && stats_interval <= 86400))
               throw Error(Errc::kInvalidArgument, "Server: stats_interval=" + std::to_string(stats_interval) +
                                                       " is not a number of seconds from 0 (off) to 86400");
             if (!(stall_warning >= 0 && stall_warning <= 86400))
               throw Error(Errc::kInvalidArgument, "Server: stall_warning=" + std::to_string(stall_warning) +
                                                       " is not a number of seconds from 0 (off) to 86400");
             ServerOptions o;
             o.metrics = metrics;
             o.listen = listen;
             o.index = index;
             o.servers = servers;
             o.workers = workers;
             o.config = parse_flags(flags);
             o.rule_from_workers = rule_from_workers;
             o.log_connections = log_connections;
             o.stats_interval = std::chrono::milliseconds(static_cast<int64_t>(stats_interval * 1000));
             o.exit_when_done = exit_when_done;
             o.insecure = insecure;
             o.max_bytes = max_bytes;
             o.stall_warning = std::chrono::milliseconds(static_cast<int64_t>(stall_warning * 1000));
             // Without the GIL: resuming reads and checks a checkpoint of the
             // whole range (the log sink takes the GIL itself).
             std::unique_ptr<PyServer> server;
             without_gil([&] { server = std::make_unique<PyServer>(o); });
             return server;
           }),
           py::arg("listen") = "0.0.0.0:0", py::arg("index") = 0, py::arg("servers") = 1, py::arg("workers") = 1,
           py::arg("flags") = std::vector<std::string>{}, py::arg("rule_from_workers") = false,
           py::arg("log_connections") = true, py::arg("stats_interval") = 0.0, py::arg("exit_when_done") = true,
           py::arg("insecure") = false, py::arg("metrics") = "", py::arg("max_bytes") = 0,
           py::arg("stall_warning") = 0.0)
      .def_property_readonly("address", &PyServer::address)
      .def_property_readonly("metrics_address", &PyServer::metrics_address,
                             "host:port of GET /metrics (\"\" when off).")
      .def("serve", &PyServer::serve,
           "Serves until every worker left (or stop(), or Ctrl-C); raises the error of a server thread that failed.")
      .def("stop", &PyServer::stop)
      .def("stats", &PyServer::stats);
}
