// SIGINT and SIGTERM stop a server the way Server::stop() does, so run()
// returns: the final checkpoint is written and the "done" line printed (a
// scheduler ending the job sends SIGTERM).
#pragma once

#include "rdmaps/server.h"

namespace rdmaps::tools {

class StopOnSignal {
 public:
  explicit StopOnSignal(Server& server);
  ~StopOnSignal();  ///< the default actions come back
  /// The signal that stopped the server; 0 if none did.
  int taken() const;
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;
};

}  // namespace rdmaps::tools
