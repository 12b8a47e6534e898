// rdmaps.Server and the server directory (servers.h).
#include "python/ext/servers.h"

#include <pybind11/stl.h>

#include <atomic>
#include <exception>
#include <future>
#include <optional>
#include <thread>

#include "python/ext/args.h"
#include "src/api/unsaved_model.h"
#include "src/launch/server_list.h"
#include "transport/cancel.h"

namespace py = pybind11;
using namespace std::chrono_literals;

namespace rdmaps::python {

launch::Environment environment_of(const std::map<std::string, std::string>& env) {
  return [env](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
}

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

PyServerDirectory::PyServerDirectory(const std::map<std::string, std::string>& env, uint32_t num_servers,
                                     double timeout_s, const std::vector<std::string>& flags)
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

void PyServer::serve() {
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

std::vector<std::string> PyServerDirectory::exchange(const std::string& bound) {
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

launch::Placement PyServerDirectory::placement_of(const launch::Environment& env, uint32_t num_servers) {
  auto p = launch::detect(env, num_servers);
  if (!p) throw Error(Errc::kInvalidArgument, "no launcher variables: nothing to exchange addresses with");
  return *p;
}

}  // namespace rdmaps::python
