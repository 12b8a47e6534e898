// Workers joining a job of several servers, as one server sees them: a
// worker probes every server, says on each probe's connection that it joins
// them now, then sends each its Hello in turn, and closes the probes once it
// joined them all. One that died in between (it had joined the servers
// before this one) was never seen by this server, which held the SSP clock
// for it and never ended its job, while the servers it had joined counted
// it lost. So a server keeps each probe's connection until it closes, and a
// worker whose connection closes after its notice is given up: the lanes it
// never reached count it lost, those it reached know it already
// (docs/protocol.md "Connection").
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "src/ps/closing_endpoints.h"
#include "transport/endpoint.h"

namespace rdmaps::ps {

class JoiningWorkers {
 public:
  /// Keeps `ep`, on which `worker`'s probe was answered yes, until it
  /// closes; a newer probe of the same worker replaces an older one (a
  /// worker asks an empty server twice), which closes without a word.
  void hold(std::unique_ptr<transport::Endpoint> ep, uint32_t worker, uint64_t reconnect_ms, ClosingEndpoints& closing);
  /// Never waits. Reads the notices that came; lets go (into `closing`) the
  /// connections that closed, failed or sent anything else, calling
  /// `gave_up(worker, reconnect_ms)` for each that had its notice. True if
  /// anything happened.
  bool poll(ClosingEndpoints& closing, const std::function<void(uint32_t, uint64_t)>& gave_up);
  /// The server stops: every probe's connection goes into `closing`.
  void let_go(ClosingEndpoints& closing);
  size_t size() const { return probes_.size(); }

 private:
  struct Probe {
    std::unique_ptr<transport::Endpoint> ep;
    uint32_t worker;
    uint64_t reconnect_ms;
    bool joining;  // its notice came: a close from now on is a worker given up where it did not arrive
  };
  /// Reads the notices waiting on `p`; false where the connection failed or sent anything else.
  static bool read_notices(Probe& p);
  std::vector<Probe> probes_;  // at most one per worker id
};

}  // namespace rdmaps::ps
