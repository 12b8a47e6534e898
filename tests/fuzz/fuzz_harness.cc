#include "tests/fuzz/fuzz_harness.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "rdmaps/error.h"

namespace rdmaps::test {
namespace {

namespace fs = std::filesystem;

uint64_t env_u64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

/// A target's corpus, in name order (a failing input reproduces from the same
/// seed on every file system); `refused[i]`: seed i is one meant to be refused.
std::vector<Bytes> corpus(const std::string& target, std::vector<bool>* refused) {
  const char* dir = std::getenv("RDMAPS_FUZZ_CORPUS");
  if (!dir) ADD_FAILURE() << "RDMAPS_FUZZ_CORPUS is not set (meson test sets it to tests/fuzz/corpus)";
  std::vector<Bytes> out;
  if (!dir) return out;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(fs::path(dir) / target)) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    out.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    refused->push_back(file.filename().string().starts_with("refused-"));
  }
  if (out.empty()) ADD_FAILURE() << "no seeds in " << (fs::path(dir) / target);
  return out;
}

// ---- the mutation loop -----------------------------------------------------------

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}
  Bytes operator()(const std::vector<Bytes>& pool) {
    Bytes b = pool[pick(pool.size())];
    const size_t rounds = 1 + pick(4);
    for (size_t r = 0; r < rounds; ++r) mutate(b, pool);
    return b;
  }

 private:
  size_t pick(size_t n) { return n ? static_cast<size_t>(rng_() % n) : 0; }
  void mutate(Bytes& b, const std::vector<Bytes>& pool) {
    static constexpr uint32_t kEdges[] = {0,          1,           2,           0x7f,       0x80,
                                          0xff,       0xffff,      0x10000,     1u << 20,   1u << 24,
                                          0x7fffffff, 0x80000000u, 0xfffffffeu, 0xffffffffu};
    switch (pick(8)) {
      case 0:  // flip a bit
        if (!b.empty()) b[pick(b.size())] ^= static_cast<uint8_t>(1u << pick(8));
        break;
      case 1:  // a random byte
        if (!b.empty()) b[pick(b.size())] = static_cast<uint8_t>(rng_());
        break;
      case 2:  // an edge value into a 32-bit field
        if (b.size() >= 4) {
          uint32_t v = kEdges[pick(std::size(kEdges))];
          std::memcpy(b.data() + pick(b.size() - 3), &v, 4);
        }
        break;
      case 3:  // truncate
        b.resize(pick(b.size() + 1));
        break;
      case 4: {  // extend with random bytes
        size_t n = 1 + pick(64);
        for (size_t i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(rng_()));
        break;
      }
      case 5: {  // splice another seed's tail
        const Bytes& other = pool[pick(pool.size())];
        size_t at = pick(b.size() + 1), from = pick(other.size() + 1);
        b.resize(at);
        b.insert(b.end(), other.begin() + static_cast<std::ptrdiff_t>(from), other.end());
        break;
      }
      case 6: {  // duplicate a chunk
        if (b.empty()) break;
        size_t at = pick(b.size()), n = 1 + pick(std::min<size_t>(b.size() - at, 32));
        Bytes chunk(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(at + n));
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(pick(b.size() + 1)), chunk.begin(), chunk.end());
        break;
      }
      default:  // a random 64-bit field
        if (b.size() >= 8) {
          uint64_t v = rng_() >> pick(64);
          std::memcpy(b.data() + pick(b.size() - 7), &v, 8);
        }
    }
  }
  std::mt19937_64 rng_;
};

}  // namespace

std::string hex(const Bytes& b) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < std::min<size_t>(b.size(), 512); ++i) {
    out += kHex[b[i] >> 4];
    out += kHex[b[i] & 15];
  }
  return out + (b.size() > 512 ? "..." : "");
}

void fuzz(const std::string& target, const std::function<std::string(const Bytes&)>& check, uint64_t share) {
  std::vector<bool> meant_refused;
  const std::vector<Bytes> pool = corpus(target, &meant_refused);
  if (pool.empty()) return;
  const uint64_t runs = std::max<uint64_t>(env_u64("RDMAPS_FUZZ_RUNS", 200000) / std::max<uint64_t>(share, 1), 1),
                 seed = env_u64("RDMAPS_FUZZ_SEED", 20261130);
  Mutator mutate(seed ^ std::hash<std::string>()(target));
  uint64_t accepted = 0;
  for (uint64_t i = 0; i < runs; ++i) {
    const Bytes input = i < pool.size() ? pool[i] : mutate(pool);
    try {
      if (std::string wrong = check(input); !wrong.empty())
        FAIL() << target << ": accepted input breaks its promise (" << wrong << "): " << hex(input);
      ++accepted;
      if (i < pool.size() && meant_refused[i]) ADD_FAILURE() << target << ": seed " << i << " was accepted";
    } catch (const Error& e) {
      // Refused, as it should be; but a seed is valid: one refused leaves its part of the target unexercised
      // (a protocol version that moved on refused every Hello seed at its first word, and the mutants with it).
      if (i < pool.size() && !meant_refused[i])
        ADD_FAILURE() << target << ": seed " << i << " refused (" << e.what() << "): " << hex(input);
    } catch (const std::exception& e) {
      FAIL() << target << ": input " << i << " threw " << typeid(e).name() << " (" << e.what()
             << ") instead of rdmaps::Error: " << hex(input);
    }
  }
  std::printf("%s: %llu inputs, %llu accepted (seed %llu)\n", target.c_str(), static_cast<unsigned long long>(runs),
              static_cast<unsigned long long>(accepted), static_cast<unsigned long long>(seed));
}

int write_corpus(const std::string& dir) {
  std::map<std::string, Seeds> all = parser_seeds();
  all.merge(landing_seeds());
  all.merge(listener_seeds());
  for (const auto& [target, both] : all) {
    fs::create_directories(fs::path(dir) / target);
    for (const auto& [list, name] : {std::pair{&both.accepted, "seed-"}, std::pair{&both.refused, "refused-"}})
      for (size_t i = 0; i < list->size(); ++i) {
        std::ofstream out(fs::path(dir) / target / (name + std::to_string(i) + ".bin"), std::ios::binary);
        out.write(reinterpret_cast<const char*>((*list)[i].data()), static_cast<std::streamsize>((*list)[i].size()));
      }
  }
  return 0;
}

}  // namespace rdmaps::test

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--write-corpus") return rdmaps::test::write_corpus(argv[2]);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
