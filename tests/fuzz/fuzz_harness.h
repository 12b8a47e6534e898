// The fuzzing harness: a seeded mutation loop over the seed corpora in
// tests/fuzz/corpus. Each input must be accepted or refused with
// rdmaps::Error, never anything else (a crash, std::bad_alloc,
// std::length_error); accepted inputs must satisfy the target's promise.
//
//   RDMAPS_FUZZ_RUNS (200000 per target), RDMAPS_FUZZ_SEED, RDMAPS_FUZZ_CORPUS
//   fuzz_tests --write-corpus DIR   regenerates the seeds
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace rdmaps::test {

using Bytes = std::vector<uint8_t>;

/// The shared secret of the targets that authenticate.
inline constexpr char kSecret[] = "fuzzing-secret-0123456789abcdef";

// A target's seeds: each accepted, except those meant to be refused (written
// as refused-N.bin), which are each refused.
struct Seeds {
  std::vector<Bytes> accepted, refused;
};

/// Each file of targets names its seeds, by target (the corpus's folders).
std::map<std::string, Seeds> parser_seeds();
std::map<std::string, Seeds> landing_seeds();
std::map<std::string, Seeds> listener_seeds();

/// At most 512 bytes of `b` in hex, for a failure message.
std::string hex(const Bytes& b);

/// Runs `target` over the corpus and its mutations; `check` returns what was
/// wrong with an accepted input (empty: fine) and may throw rdmaps::Error.
/// A target whose inputs cost a connection each runs 1 in `share` of them.
void fuzz(const std::string& target, const std::function<std::string(const Bytes&)>& check, uint64_t share = 1);

}  // namespace rdmaps::test
