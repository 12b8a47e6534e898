// rdmaps.Worker: a Client and the thread that runs its operations in order
// (comm_thread.h), made safe to call from Python threads, signal handlers,
// forked children and interpreter exit.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "python/ext/comm_thread.h"
#include "rdmaps/client.h"
#include "transport/process_id.h"

namespace rdmaps::python {

// A Client plus the thread that runs its operations.
class Worker {
 public:
  Worker(std::vector<std::string> servers, uint32_t worker, const std::vector<std::string>& flags,
         double timeout_seconds, const std::string& metrics);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void declare(const std::string& name, size_t floats);
  /// Before connect() the client takes it directly, as Client::set_learning_rate
  /// and the C ABI do (it went to a comm thread not made yet: "call connect() first").
  void set_learning_rate(std::optional<float> lr);
  /// Client::register_memory(); `keep` (what owns the memory, or an export
  /// of it: pinned()) is held until the client is gone, which is the promise
  /// that call asks for. After
  /// connect() the comm thread registers it, in turn with the operations
  /// queued before; the client may hold it even if that failed.
  void register_memory(float* data, size_t floats, pybind11::object keep);
  void connect();

  /// The thread that runs this worker's operations; exists from connect() on.
  CommThread& comm();
  CommThread::Ticket submit(CommThread::Kind kind, const std::string& name = {}, void* data = nullptr,
                            size_t floats = 0, bool awaited = false) {
    return comm().submit(kind, name, data, floats, awaited);
  }
  /// Waits for the operation; a signal handler that raises (Ctrl-C) ends the
  /// wait, not the operation: `buffer`, the memory it reads or writes (an
  /// export of it: pinned()), stays referenced here until it finished.
  void wait(CommThread::Ticket t, pybind11::object buffer = {});
  void run(CommThread::Kind kind, const std::string& name = {}, void* data = nullptr, size_t floats = 0,
           pybind11::object buffer = {}) {
    wait(submit(kind, name, data, floats, true), std::move(buffer));
  }
  void wait_all();
  size_t pending() const { return comm_ ? comm_->pending() : 0; }
  uint64_t clock_value();
  // Waits for the queued operations but not on their errors: after a server
  // died, pushes_lost is what one reads.
  pybind11::dict stats();
  // Sends the goodbye; the worker is unusable afterwards. Calls in progress on
  // other threads are interrupted (they raise rdmaps.Error, code 'cancelled')
  // and waited for: freeing the client under them crashed the process. So are
  // operations whose wait a signal ended (Ctrl-C): the process then exits at
  // once instead of after the worker's timeout.
  void close();
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
  CommThread::Snapshot snapshot();

  // Every call ended: the client and comm thread go, then the buffers they used.
  void tear_down() noexcept;

  // Before the comm thread exists, a connect() on another thread may be using
  // the client: a call made meanwhile (stats(), declare(), register_memory())
  // was refused as another thread's, or made the connect fail. Ctrl-C reaches
  // the wait (a connect waits for its server up to the timeout). The caller
  // holds a Use.
  void no_connect_under_way();

  bool in_forked_child() const { return owner_pid_ != transport::this_process_id(); }
  // A forked child has no comm thread to join (joining it, or destroying its
  // condition variables, hung for good); the connections are the parent's,
  // which Client's destructor leaves alone there.
  void let_go_of_the_parents();

  void check_process() const;

  template <typename WaitFor>
  void interruptible(CommThread::Ticket ticket, pybind11::object buffer, WaitFor&& wait_for);

  // Buffers of interrupted waits, by ticket; declared first so that they go
  // only after comm_ finished every operation.
  std::multimap<CommThread::Ticket, pybind11::object> in_flight_;
  std::vector<pybind11::object> registered_;  // register_memory()'s owners: also go after client_
  std::vector<pybind11::object> stranded_;    // buffers of failed operations: also go after client_
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

/// `w`, or an error if it was closed.
Worker& live(Worker& w);
/// push, init or pull (`op`) of `values` as tensor `name`, both checked first.
void run_on_buffer(Worker& w, CommThread::Kind kind, const char* op, const pybind11::object& name_object,
                   const pybind11::object& values);

}  // namespace rdmaps::python
