// Command-line flags of rdmaps-perf: "--name value" or "--name=value";
// unknown flags and bad values are errors that name the flag.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace rdmaps::bench {

class Flags {
 public:
  /// `known` lists accepted flag names; `switches` those that take no value.
  Flags(int argc, char** argv, int first, const std::set<std::string>& known, const std::set<std::string>& switches);
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::string str(const std::string& name, const std::string& fallback) const;
  uint64_t u64(const std::string& name, uint64_t fallback) const;
  /// Comma-separated sizes with optional K/M/G suffix (powers of two).
  std::vector<size_t> sizes(const std::string& name, const std::vector<size_t>& fallback) const;

 private:
  std::map<std::string, std::string> values_;
};

uint64_t parse_size(const std::string& text, const std::string& flag);

}  // namespace rdmaps::bench
