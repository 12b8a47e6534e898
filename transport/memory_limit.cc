#include "transport/memory_limit.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

namespace rdmaps::transport {

namespace {

// A value in a file of single numbers ("max" and v1's page-rounded LONG_MAX: no limit).
std::optional<uint64_t> read_number(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string text;
  if (!(in >> text) || text == "max") return std::nullopt;
  try {
    const uint64_t v = std::stoull(text);
    if (v >= (uint64_t{1} << 62)) return std::nullopt;
    return v;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

uint64_t stat_field(const std::filesystem::path& file, const std::string& key) {
  std::ifstream in(file);
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v)
    if (k == key) return v;
  return 0;
}

// mountinfo escapes blanks in paths as octal (\040).
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.find_first_not_of("01234567") == std::string::npos) {
        out += static_cast<char>(std::stoi(oct, nullptr, 8));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

struct Mount {
  std::string root, point;
};

// The memory controller's mount: v1's "cgroup" with the memory option, or v2's "cgroup2".
std::optional<Mount> memory_mount(const std::string& mountinfo, bool v2) {
  std::ifstream in(mountinfo);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) f.push_back(w);
    size_t dash = 0;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (dash < 5 || dash + 1 >= f.size()) continue;
    const std::string& type = f[dash + 1];
    const std::string options = dash + 3 < f.size() ? "," + f[dash + 3] + "," : "";
    if (v2 ? type == "cgroup2" : (type == "cgroup" && options.find(",memory,") != std::string::npos))
      return Mount{unescape(f[3]), unescape(f[4])};
  }
  return std::nullopt;
}

struct Headroom {
  uint64_t bytes = UINT64_MAX;
  std::string cgroup;
};

// The tightest limit less unreclaimable use from `dir` up to the mount point.
void walk(const Mount& mount, const std::string& path, bool v2, Headroom& best) {
  namespace fs = std::filesystem;
  std::string relative = path;
  if (mount.root != "/" && relative.rfind(mount.root, 0) == 0) relative = relative.substr(mount.root.size());
  fs::path dir = fs::path(mount.point) / fs::path(relative).relative_path();
  // A cgroup namespace may show a path the mount does not hold: then this
  // process's cgroup is the mount's root.
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) dir = mount.point;
  const fs::path top = fs::path(mount.point);
  for (fs::path d = dir;; d = d.parent_path()) {
    const auto limit = read_number(d / (v2 ? "memory.max" : "memory.limit_in_bytes"));
    if (limit) {
      const uint64_t used = read_number(d / (v2 ? "memory.current" : "memory.usage_in_bytes")).value_or(0);
      const uint64_t cache = stat_field(d / "memory.stat", v2 ? "inactive_file" : "total_inactive_file");
      const uint64_t held = used > cache ? used - cache : 0;
      const uint64_t room = *limit > held ? *limit - held : 0;
      if (room < best.bytes) {
        best.bytes = room;
        const std::string rel = fs::path(d).lexically_relative(top).generic_string();
        best.cgroup = "/" + (rel == "." ? std::string() : rel);
      }
    }
    if (d == top || d == d.parent_path() || d.string().size() <= top.string().size()) break;
  }
}

}  // namespace

uint64_t resident_bytes() {
  std::ifstream in("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

std::string size_text(uint64_t bytes, int gb_digits) {
  char text[32];
  if (bytes < 1000000000)
    std::snprintf(text, sizeof(text), "%.1f MB", bytes / 1e6);
  else
    std::snprintf(text, sizeof(text), "%.*f GB", gb_digits, bytes / 1e9);
  return text;
}

AvailableMemory available_memory(const MemorySources& sources) {
  AvailableMemory a;
  {
    std::ifstream in(sources.meminfo);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string key;
      uint64_t kib = 0;
      if (fields >> key >> kib && key == "MemAvailable:") {
        a.bytes = kib * 1024;
        a.bound = "MemAvailable";
        break;
      }
    }
  }
  Headroom best;
  std::ifstream in(sources.cgroup);
  std::string line;
  while (std::getline(in, line)) {
    // "hierarchy:controllers:path"; v2's hierarchy is 0 with no controllers.
    const size_t a1 = line.find(':'), a2 = a1 == std::string::npos ? a1 : line.find(':', a1 + 1);
    if (a2 == std::string::npos) continue;
    const std::string controllers = "," + line.substr(a1 + 1, a2 - a1 - 1) + ",";
    const std::string path = line.substr(a2 + 1);
    const bool v2 = line.substr(0, a1) == "0" && controllers == ",,";
    if (!v2 && controllers.find(",memory,") == std::string::npos) continue;
    if (auto mount = memory_mount(sources.mountinfo, v2)) walk(*mount, path, v2, best);
  }
  if (best.bytes != UINT64_MAX && (a.bytes == 0 || best.bytes < a.bytes)) {
    a.bytes = best.bytes;
    a.bound = "the limit of memory cgroup " + best.cgroup;
  }
  return a;
}

}  // namespace rdmaps::transport
