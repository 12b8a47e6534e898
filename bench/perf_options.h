// Command lines of rdmaps-perf's benchmarks, over CLI11 (src/api/cli.h): sizes
// take a K, M or G suffix (powers of two), and every size and count has bounds,
// so 0 or an absurd value is an error naming the flag.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "src/api/cli.h"

namespace rdmaps::bench {

/// --name SIZE in [min, max] (65536, 64K, 1M).
CLI::Option* add_size(CLI::App& app, const std::string& name, uint64_t& target, uint64_t min, uint64_t max,
                      const std::string& help);
/// --name SIZE,SIZE,... each in [min, max].
CLI::Option* add_sizes(CLI::App& app, const std::string& name, std::vector<uint64_t>& target, uint64_t min,
                       uint64_t max, const std::string& help);
/// Parses argv[first..] into `app` (made with cli::set_defaults before its
/// options); false when it printed --help instead.
bool parse(CLI::App& app, int argc, char** argv, int first);

}  // namespace rdmaps::bench
