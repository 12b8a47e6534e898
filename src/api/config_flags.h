// The parameter-server flags, defined once: parse_config, rdmaps-server,
// rdmaps-train and rdmaps-perf ps add them to their command lines from here.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "rdmaps/config.h"
#include "src/api/cli.h"

namespace rdmaps {

/// Which of the flags a program takes: those in `only` (empty: all) less those in `except`.
struct ConfigFlagSelection {
  std::set<std::string> only, except;
};

/// Adds the flags (each with its RDMAPS_* variable) to `app`, setting the
/// fields of `config`, which must outlive the parse. Takes `app`'s final
/// callback: there the secret is read from RDMAPS_SECRET unless a secret file
/// was given, and rule_stated is set when a flag of the update rule was.
/// Returns the options added, for cli::given.
std::vector<CLI::Option*> add_config_flags(CLI::App& app, Config& config, const ConfigFlagSelection& select = {});

/// Empty, or why a rule parameter typed in `args` does nothing under `rule`
/// ("--momentum 0.5 does nothing with rule sgd: ..."): taken, it was
/// dropped without a word. Its variable is not judged (one environment may
/// serve jobs of several rules).
std::string unused_rule_flag(const CLI::App& app, const std::vector<std::string>& args, UpdateRule rule);

}  // namespace rdmaps
