// A run whose final checkpoint could not be written lost the trained model: it
// has failed, whoever ran the server (docs/cluster.md "Checkpoints and restarts").
#pragma once

#include "rdmaps/error.h"
#include "rdmaps/server.h"

namespace rdmaps {

/// Throws Error(kIo) where `stats` (of a server whose run() returned) says its final checkpoint failed.
inline void throw_if_model_unsaved(const ServerStats& stats) {
  if (stats.final_checkpoint_failed)
    throw Error(Errc::kIo,
                "the final checkpoint could not be written (the log says why): the trained model is not saved");
}

}  // namespace rdmaps
