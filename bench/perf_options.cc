#include "bench/perf_options.h"

#include <cctype>

#include "rdmaps/error.h"

namespace rdmaps::bench {

Flags::Flags(int argc, char** argv, int first, const std::set<std::string>& known,
             const std::set<std::string>& switches) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0)
      throw Error(Errc::kInvalidArgument, "unexpected argument '" + arg + "' (flags start with --; see --help)");
    std::string name = arg.substr(2), value;
    auto eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (!known.count(name)) throw Error(Errc::kInvalidArgument, "unknown flag --" + name + " (see --help)");
    if (switches.count(name)) {
      if (eq != std::string::npos) throw Error(Errc::kInvalidArgument, "flag --" + name + " takes no value");
      value = "1";
    } else if (eq == std::string::npos) {
      if (i + 1 >= argc) throw Error(Errc::kInvalidArgument, "flag --" + name + " needs a value");
      value = argv[++i];
    }
    values_[name] = value;
  }
}

std::string Flags::str(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

uint64_t parse_size(const std::string& text, const std::string& flag) {
  size_t pos = 0;
  uint64_t value = 0;
  try {
    value = std::stoull(text, &pos);
  } catch (const std::exception&) {
    throw Error(Errc::kInvalidArgument, "--" + flag + ": '" + text + "' is not a number");
  }
  std::string suffix = text.substr(pos);
  if (suffix == "K" || suffix == "k")
    value <<= 10;
  else if (suffix == "M" || suffix == "m")
    value <<= 20;
  else if (suffix == "G" || suffix == "g")
    value <<= 30;
  else if (!suffix.empty() || text.empty() || text[0] == '-')
    throw Error(Errc::kInvalidArgument, "--" + flag + ": '" + text + "' is not a size (e.g. 65536, 64K, 1M)");
  return value;
}

uint64_t Flags::u64(const std::string& name, uint64_t fallback) const {
  return has(name) ? parse_size(str(name, ""), name) : fallback;
}

std::vector<size_t> Flags::sizes(const std::string& name, const std::vector<size_t>& fallback) const {
  if (!has(name)) return fallback;
  std::vector<size_t> out;
  std::string text = str(name, "");
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    uint64_t v = parse_size(item, name);
    if (v == 0) throw Error(Errc::kInvalidArgument, "--" + name + ": sizes must be at least 1 byte");
    out.push_back(v);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace rdmaps::bench
