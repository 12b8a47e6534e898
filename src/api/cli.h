// Command lines of rdmaps' programs and of parse_config, over CLI11: checks
// whose messages quote the value and say what is expected, and a parse that
// turns CLI11's errors into Error(kInvalidArgument) naming the flag, or the
// RDMAPS_* variable the bad value came from.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "rdmaps/error.h"

namespace rdmaps::cli {

/// `v` read as a decimal count: digits only (no sign, "+" or "0x"); a value
/// past 2^64-1 is too_large, not 2^64-1.
struct Decimal {
  bool digits = false, too_large = false;
  uint64_t value = 0;
};
Decimal parse_decimal(const std::string& v);
/// `v` read as a plain decimal number ("0.1", "-2", "1e-3") into `d`: false
/// for anything else, hex ("0x10", which strtod reads as 16), spaces, inf
/// and nan included.
bool parse_real(const std::string& v, double& d);
/// A whole number in [min, max]: a count too large for its field (4294967297
/// for a 32-bit one) is an error, not the count modulo 2^32. Register it with
/// ->transform(): it hands the value on in decimal (CLI11 reads "010" as 8).
CLI::Validator count(uint64_t min, uint64_t max = std::numeric_limits<uint64_t>::max());
/// As count(), with an optional unit of powers of 1024 (K, M, G, T; KB and
/// KiB alike, any case): "64M" goes on as 67108864. Decimal digits only: no
/// sign, space or hex ("0x1K" was 1024, "010K" 8192).
CLI::Validator size(uint64_t min, uint64_t max = std::numeric_limits<uint64_t>::max());
/// `word` (off, inf, auto) or a value `rest` accepts; where `rest` refuses
/// it, says why ("too large") or "'v' is not `expected`".
CLI::Validator word_or(const std::string& word, CLI::Validator rest, const std::string& expected);
/// A number a float holds (0, or 1.2e-38 to 3.4e38 either side) for which
/// `ok` holds; `expected` completes "'v' is not ...".
CLI::Validator number(std::function<bool(double)> ok, const std::string& expected);
/// Seconds, fractions allowed, from a millisecond (what a duration here
/// holds: less would be 0) to a day; with `zero_is_off`, 0 too.
CLI::Validator seconds(bool zero_is_off = false);
/// A value seconds() accepted, as the milliseconds the options hold.
std::chrono::milliseconds milliseconds_of(double seconds);
CLI::Validator positive();
CLI::Validator non_negative();
/// One of `names`.
CLI::Validator one_of(const std::vector<std::string>& names);
/// A HOST:PORT that SockAddr::parse takes (a name resolves now); not empty.
CLI::Validator address();
/// A switch: "--name" alone is on, "--name on|off" (or =on|off, true|false, 1|0) says which.
/// --help shows `target`'s value now as its default.
CLI::Option* add_switch(CLI::App& app, const std::string& name, bool& target, const std::string& help);

/// --help as CLI11 writes it, but a switch shows its default, not the "on" it takes alone.
class Formatter : public CLI::Formatter {
 public:
  std::string make_option_opts(const CLI::Option* opt) const override;
};

/// Every option of `app` takes its last value, as flags always did here; an
/// App made this way also lists each option's RDMAPS_* variable in --help,
/// and --version prints the build's version (rdmaps_build_version()).
void set_defaults(CLI::App& app);
/// An error of the command line a program was given: the programs exit 2
/// for it, 1 for a run that failed (docs/cluster.md "Flags and variables").
class UsageError : public Error {
 public:
  using Error::Error;
};
inline constexpr int kUsageStatus = 2;

/// Parses `args` (without the program name); a switch given an empty value
/// ("--name ''", "--name=") is an error, not the switch alone. --help passes
/// and --version pass as CLI::Success (app.exit prints them); any other error becomes
/// a UsageError (kInvalidArgument, or the code of a check the parse ran).
void parse(CLI::App& app, const std::vector<std::string>& args);
void parse(CLI::App& app, int argc, char** argv, int first = 1);
/// Whether `option` was given in `args` (not only by its environment variable).
bool on_command_line(const CLI::Option* option, const std::vector<std::string>& args);
/// `message` with a leading option name ("--metrics ...") replaced by its
/// variable where the value came from the environment, not from `args`.
std::string name_source(const CLI::App& app, const std::vector<std::string>& args, std::string message);
/// "--name=value" for every option of `options` that was given, by flag or
/// variable: the same settings for a child process.
std::vector<std::string> given(const std::vector<CLI::Option*>& options);

}  // namespace rdmaps::cli
