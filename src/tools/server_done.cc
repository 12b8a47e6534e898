#include "src/tools/server_done.h"

#include <cstdio>

namespace rdmaps::tools {

std::string server_done(const ServerStats& s) {
  char line[512];
  std::snprintf(line, sizeof(line),
                "%llu pushes, %llu pulls, %llu clocks, %llu rejected, %llu dropped, longest set-up pause %.1f ms, "
                "resumed with %llu updates, %llu checkpoints (the newest holds %llu updates)",
                static_cast<unsigned long long>(s.pushes), static_cast<unsigned long long>(s.pulls),
                static_cast<unsigned long long>(s.clocks), static_cast<unsigned long long>(s.rejected),
                static_cast<unsigned long long>(s.dropped), s.longest_setup_pause_us / 1e3,
                static_cast<unsigned long long>(s.resumed_updates), static_cast<unsigned long long>(s.checkpoints),
                static_cast<unsigned long long>(s.checkpoint_updates));
  return line;
}

}  // namespace rdmaps::tools
