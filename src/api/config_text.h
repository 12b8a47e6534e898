// A Config as the start-up lines and logs show it, beyond the public
// describe() (include/rdmaps/config.h).
#pragma once

#include <string>

#include "rdmaps/config.h"

namespace rdmaps {

/// describe() less the workers' own settings (skip-pulls), which a server
/// neither takes nor uses: its config line showed them as if it did. What
/// the first worker sets (an unstated staleness bound; the rule, with
/// `rule_from_workers`) is named as such.
std::string describe_server(const Config& config, bool rule_from_workers = false);
/// The rule and its parameters, as describe() gives them ("rule sgd, lr 0.1").
std::string describe_rule(const Config& config);

}  // namespace rdmaps
