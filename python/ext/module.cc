// rdmaps._rdmaps: the Python face of the C++ API. Buffers cross without
// copies (buffer protocol, or an address and a byte count from rdmaps.torch);
// the GIL is released while anything waits on the network.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "python/ext/args.h"
#include "python/ext/errors.h"
#include "python/ext/gil.h"
#include "python/ext/servers.h"
#include "python/ext/worker.h"
#include "rdmaps/config.h"
#include "rdmaps/error.h"
#include "rdmaps/log.h"
#include "rdmaps/server.h"
#include "rdmaps/version.h"
#include "rdmaps_config.h"
#include "src/api/capabilities.h"
#include "src/api/log_sink.h"
#include "src/launch/pmix_exchange.h"
#include "src/launch/server_list.h"
#include "transport/address.h"

namespace py = pybind11;
using namespace std::chrono_literals;

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

  add_error_classes(m);

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
