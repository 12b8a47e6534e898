// A log sink the library calls from several threads at once: for a sink that
// serializes itself behind a lock the library cannot see (the Python
// handler's GIL), where the library's own one-at-a-time lock would deadlock
// with a thread that holds that lock and logs.
#pragma once

#include "rdmaps/log.h"

namespace rdmaps {

/// set_log_sink() without "one call at a time"; an empty sink restores stderr.
void set_concurrent_log_sink(LogSink sink);

/// True on a thread inside the installed sink (a call the sink makes).
bool in_log_sink();

}  // namespace rdmaps
