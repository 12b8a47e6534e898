// Workers joining a job of several servers, as one server sees them: a
// worker probes every server, says it is joining, then sends each its Hello
// in turn. One that died in between (it had joined the servers before this
// one) was never seen by this server, which held the SSP clock for it and
// never ended its job, while the servers it had joined counted it lost. So
// the server keeps each probe's connection until the worker's Hello is
// admitted here, and a worker whose connection closes after it said it was
// joining has given up: the lanes count it lost (docs/protocol.md "Connection").
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
  using Clock = std::chrono::steady_clock;
  /// A probe not followed by its joining notice within this is let go
  /// quietly: its worker was refused by another server, or stopped probing.
  static constexpr std::chrono::seconds kNoticeWait{60};

  /// Keeps `ep`, on which `worker`'s probe was answered yes, from `since`;
  /// a newer probe of the same worker replaces an older one (a worker asks
  /// an empty server twice), which closes without a word.
  void hold(std::unique_ptr<transport::Endpoint> ep, uint32_t worker, uint64_t reconnect_ms, Clock::time_point since,
            ClosingEndpoints& closing);
  /// Never waits. Lets go (into `closing`) the probes of workers that
  /// `joined(worker, since)` says this server admitted after `since`, and
  /// calls `gave_up(worker, reconnect_ms)` for each whose connection closed
  /// after its joining notice. True if anything happened.
  bool poll(ClosingEndpoints& closing, const std::function<bool(uint32_t, Clock::time_point)>& joined,
            const std::function<void(uint32_t, uint64_t)>& gave_up);
  /// The server stops: every probe's connection goes into `closing`.
  void let_go(ClosingEndpoints& closing);
  size_t size() const { return probes_.size(); }

 private:
  struct Probe {
    std::unique_ptr<transport::Endpoint> ep;
    uint32_t worker;
    uint64_t reconnect_ms;
    Clock::time_point since;
    bool joining;  // its notice came: a close from now on is a worker that gave up
  };
  /// Reads the notices waiting on `p`; false where the connection failed or sent anything else.
  static bool read_notices(Probe& p);
  std::vector<Probe> probes_;  // at most one per worker id
};

}  // namespace rdmaps::ps
