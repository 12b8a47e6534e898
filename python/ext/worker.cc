// rdmaps.Worker (worker.h).
#include "python/ext/worker.h"

#include <algorithm>
#include <future>

#include "python/ext/args.h"
#include "python/ext/gil.h"
#include "python/ext/stats.h"
#include "rdmaps/error.h"

namespace py = pybind11;

namespace rdmaps::python {

template <typename WaitFor>
void Worker::interruptible(CommThread::Ticket ticket, py::object buffer, WaitFor&& wait_for) {
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

Worker::Worker(std::vector<std::string> servers, uint32_t worker, const std::vector<std::string>& flags,
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

Worker::~Worker() {
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

void Worker::declare(const std::string& name, size_t floats) {
  if (!comm_) {
    Use use(*this);
    no_connect_under_way();
    if (!comm_) return client_->declare(name, floats);
  }
  throw Error(Errc::kInvalidArgument, "declare('" + name + "') after connect()");
}

void Worker::set_learning_rate(std::optional<float> lr) {
  if (!comm_) {
    Use use(*this);
    no_connect_under_way();
    if (!comm_) return client_->set_learning_rate(lr);
  }
  wait(comm().submit_learning_rate(lr, true));
}

void Worker::register_memory(float* data, size_t floats, py::object keep) {
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

void Worker::connect() {
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

CommThread& Worker::comm() {
  if (!comm_) throw Error(Errc::kInvalidArgument, "call connect() first");
  check_process();
  return *comm_;
}

void Worker::wait(CommThread::Ticket t, py::object buffer) {
  CommThread& c = comm();
  interruptible(t, std::move(buffer), [&] { return c.wait_for(t, kSignalCheck); });
}

void Worker::wait_all() {
  if (!comm_) return;
  const CommThread::Ticket last = comm_->last_submitted();
  interruptible(last, {}, [&] { return comm_->wait_all_for(last, kSignalCheck); });
}

uint64_t Worker::clock_value() {
  wait_all();
  return snapshot().clock;
}

py::dict Worker::stats() {
  const CommThread::Snapshot s = snapshot();
  return client_stats_dict(s.stats, s.messages_rejected);
}

void Worker::close() {
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

CommThread::Snapshot Worker::snapshot() {
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

void Worker::tear_down() noexcept {
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

void Worker::no_connect_under_way() {
  check_process();
  while (connecting_ > 0) {  // changed with the GIL held: read between naps without it
    without_gil([] { std::this_thread::sleep_for(std::chrono::milliseconds(1)); });
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
  if (closing_ || !client_) throw Error(Errc::kInvalidArgument, "the worker was closed");
}

void Worker::let_go_of_the_parents() {
  static_cast<void>(comm_.release());
  client_.reset();
}

void Worker::check_process() const {
  if (owner_pid_ != transport::this_process_id())
    throw Error(Errc::kInvalidArgument, "this worker belongs to process " + std::to_string(owner_pid_) +
                                            ", not this forked child: a child makes its own rdmaps.Worker");
}

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

}  // namespace rdmaps::python
