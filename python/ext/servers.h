// rdmaps.Server and the launch's server directory (rdmaps.torch.init) as
// Python sees them: the GIL released wherever they wait or join threads
// that may log to Python, and Ctrl-C answered.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "python/ext/gil.h"
#include "python/ext/stats.h"
#include "rdmaps/server.h"
#include "src/launch/server_directory.h"

namespace rdmaps::python {

// rdmaps.Server: serve() runs it on a thread of its own, so that Ctrl-C reaches Python.
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
  void serve();
  void stop() { server_->stop(); }
  pybind11::dict stats() const { return server_stats_dict(server_->stats()); }

 private:
  std::unique_ptr<Server> server_;
};

// A launch's variables as Python passed them (os.environ, or a test's dict).
launch::Environment environment_of(const std::map<std::string, std::string>& env);
// rdmaps.launcher's Placement fields; None when no launcher variable is set.
pybind11::object detect_placement(const std::map<std::string, std::string>& env, uint32_t num_servers);

// The C++ tools' exchange (RDMAPS_SERVERS, PMIx or the rendezvous), so that
// Python ranks and rdmaps-server share one launch (mpirun -np 1 rdmaps-server
// : -np 4 python3 train.py) and one rendezvous protocol. Rank 0 hosts the
// rendezvous for as long as this object lives.
class PyServerDirectory {
 public:
  /// `flags`: the job's configuration (rdmaps.config_flags), for its secret.
  PyServerDirectory(const std::map<std::string, std::string>& env, uint32_t num_servers, double timeout_s,
                    const std::vector<std::string>& flags);
  // Without the GIL: rank 0's rendezvous thread, joined here, may be logging
  // to Python (rdmaps.log_to_python) a rank it refuses, which takes the GIL.
  ~PyServerDirectory() {
    without_gil([this] { directory_.reset(); });
  }
  std::string listen_address() const { return directory_->listen_address(); }
  /// A server passes the address it bound, a worker ""; every server's, in index order.
  std::vector<std::string> exchange(const std::string& bound);

 private:
  static launch::Placement placement_of(const launch::Environment& env, uint32_t num_servers);

  launch::Environment env_;
  launch::Placement placement_;
  std::unique_ptr<launch::ServerDirectory> directory_;
};

}  // namespace rdmaps::python
