#include "src/api/cli.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <system_error>

#include "rdmaps/error.h"
#include "rdmaps/version.h"
#include "transport/address.h"

namespace rdmaps::cli {

Decimal parse_decimal(const std::string& v) {
  Decimal d;
  d.digits = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
  if (!d.digits) return d;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), d.value);
  d.too_large = ec == std::errc::result_out_of_range;
  return d;
}

bool parse_real(const std::string& v, double& d) {
  if (v.empty() || v.find_first_not_of("0123456789+-.eE") != std::string::npos) return false;
  char* end = nullptr;
  d = std::strtod(v.c_str(), &end);
  return end == v.c_str() + v.size();
}

CLI::Validator word_or(const std::string& word, CLI::Validator rest, const std::string& expected) {
  return CLI::Validator(
      [=](std::string& v) mutable -> std::string {
        if (v == word) return {};
        std::string copy = v;
        const std::string why = rest(copy);
        if (why.empty()) return {};
        const bool says_more = why.find("is not a number") != std::string::npos ||
                               why.find("out of range") != std::string::npos ||
                               why.find("too large") != std::string::npos;
        return says_more ? why : "'" + v + "' is not " + expected;
      },
      "");
}

CLI::Validator count(uint64_t min, uint64_t max) {
  const std::string range = max == std::numeric_limits<uint64_t>::max()
                                ? "a whole number of at least " + std::to_string(min)
                                : "a whole number from " + std::to_string(min) + " to " + std::to_string(max);
  return CLI::Validator(
      [=](std::string& v) -> std::string {
        // Not lexical_cast: it saturates past 2^64-1, and the setter's stoull then throws.
        const Decimal d = parse_decimal(v);
        if (d.too_large)
          return "'" + v + "' is too large (" +
                 (max == std::numeric_limits<uint64_t>::max() ? "at most " + std::to_string(max) : range) + ")";
        if (!d.digits || d.value < min || d.value > max) return "'" + v + "' is not " + range;
        // Handed on in decimal: CLI11 converts with base 0, and --workers 010
        // was 8 workers (08 "could not convert"), while --staleness 010 was 10.
        v = std::to_string(d.value);
        return {};
      },
      "");
}

CLI::Validator size(uint64_t min, uint64_t max) {
  const CLI::Validator in_range = count(min, max);
  return CLI::Validator(
      [=](std::string& v) mutable -> std::string {
        const size_t unit_at = std::min(v.find_first_not_of("0123456789"), v.size());
        std::string unit = v.substr(unit_at);
        std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return std::tolower(c); });
        int shift = 0;
        if (!unit.empty()) {
          const std::string prefixes = "kmgt";
          const size_t p = prefixes.find(unit[0]);
          if (p == std::string::npos || !(unit.size() == 1 || unit.substr(1) == "b" || unit.substr(1) == "ib"))
            return "'" + v + "' is not a size (a whole number, or one with K, M, G or T for powers of 1024)";
          shift = 10 * static_cast<int>(p + 1);
        }
        const Decimal d = parse_decimal(v.substr(0, unit_at));
        if (!d.digits) return "'" + v + "' is not a size (a whole number, or one with K, M, G or T for powers of 1024)";
        if (d.too_large || (shift && d.value > (std::numeric_limits<uint64_t>::max() >> shift)))
          return "'" + v + "' is too large (at most " + std::to_string(max) + ")";
        std::string expanded = std::to_string(d.value << shift);
        const std::string why = in_range(expanded);  // names the value expanded ("--floats 1T")
        if (!why.empty()) return why;
        v = expanded;
        return {};
      },
      "");
}

CLI::Validator number(std::function<bool(double)> ok, const std::string& expected) {
  return CLI::Validator(
      [ok = std::move(ok), expected](std::string& v) -> std::string {
        double d = 0;
        if (!parse_real(v, d) || !std::isfinite(d)) return "'" + v + "' is not a number";
        // The settings these checks guard are floats: 1e39 would become inf, 1e-50 zero.
        if (std::fabs(d) > std::numeric_limits<float>::max() ||
            (d != 0 && std::fabs(d) < std::numeric_limits<float>::min()))
          return "'" + v + "' is out of range (a float holds 1.2e-38 to 3.4e38)";
        if (!ok(d)) return "'" + v + "' is not " + expected;
        return {};
      },
      "");
}

CLI::Validator seconds(bool zero_is_off) {
  return number([=](double d) { return (zero_is_off && d == 0) || (d >= 0.001 && d <= 86400); },
                std::string(zero_is_off ? "0 (off) or " : "") + "a number of seconds from 0.001 to 86400");
}

std::chrono::milliseconds milliseconds_of(double seconds) {
  return std::chrono::milliseconds(std::llround(seconds * 1000));
}

CLI::Validator positive() {
  return number([](double d) { return d > 0; }, "a positive number");
}

CLI::Validator non_negative() {
  return number([](double d) { return d >= 0; }, "a number of at least 0");
}

CLI::Validator one_of(const std::vector<std::string>& names) {
  std::string list;
  for (size_t i = 0; i < names.size(); ++i)
    list += (i == 0 ? "" : i + 1 == names.size() ? (names.size() == 2 ? " or " : ", or ") : ", ") + names[i];
  return CLI::Validator(
      [=](std::string& v) -> std::string {
        for (const auto& n : names)
          if (v == n) return {};
        return "'" + v + "' is not " + (names.size() > 2 ? "one of " : "") + list;
      },
      "");
}

CLI::Validator address() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        if (v.empty()) return "'' is not an address (HOST:PORT)";
        // Here the flag or variable it came from is known; where it is used, not.
        try {
          transport::SockAddr::parse(v);
        } catch (const Error& e) {
          return e.what();
        }
        return {};
      },
      "");
}

CLI::Option* add_switch(CLI::App& app, const std::string& name, bool& target, const std::string& help) {
  return app.add_option(name, target, help)
      ->expected(0, 1)
      ->default_str("on")
      ->type_name("[on|off]")
      // default_str is taken (the value alone); --help shows the default from here.
      ->option_text(std::string("[on|off]=") + (target ? "on" : "off"))
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            if (v == "on" || v == "off" || v == "true" || v == "false" || v == "1" || v == "0") return {};
            return "'" + v + "' is not on or off";
          },
          ""));
}

std::string Formatter::make_option_opts(const CLI::Option* opt) const {
  // A switch's default_str is its value when it stands alone, not its default:
  // add_switch wrote the default into its option_text.
  if (opt->get_expected_min() != 0 || opt->get_expected_max() != 1) return CLI::Formatter::make_option_opts(opt);
  const std::string& opts = opt->get_option_text().empty() ? opt->get_type_name() : opt->get_option_text();
  return " " + opts + (opt->get_envname().empty() ? "" : " (Env:" + opt->get_envname() + ")");
}

void set_defaults(CLI::App& app) {
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.formatter(std::make_shared<Formatter>());
  // Programs' apps only: parse_config (a library call) has no --help either.
  if (app.get_help_ptr() != nullptr)
    app.set_version_flag("--version", rdmaps_build_version(), "print this build's version and exit");
}

namespace {

bool on_command_line(const std::vector<std::string>& args, const std::string& name) {
  for (const auto& a : args)
    if (a == name || a.rfind(name + "=", 0) == 0) return true;
  return false;
}

}  // namespace

bool on_command_line(const CLI::Option* option, const std::vector<std::string>& args) {
  return on_command_line(args, option->get_name());
}

// CLI11 names the option even when its value came from the environment; a
// user who never typed the flag needs the variable's name to find the value.
std::string name_source(const CLI::App& app, const std::vector<std::string>& args, std::string message) {
  for (const CLI::Option* o : app.get_options()) {
    const std::string name = o->get_name();
    const bool leads = !name.empty() && message.rfind(name, 0) == 0 && message.size() > name.size() &&
                       (message[name.size()] == ':' || message[name.size()] == ' ');
    if (!leads) continue;
    const std::string& env = o->get_envname();
    if (!env.empty() && !on_command_line(args, name) && std::getenv(env.c_str()))
      return env + message.substr(name.size());
    break;
  }
  return message;
}

namespace {

// CLI11 names a hidden option (group "", the flags a program gives the
// processes it starts) "" in its errors: ": 'abc' is not a whole number".
// The hidden flag given whose value the message quotes, else the first given.
std::string name_hidden(const CLI::App& app, const std::vector<std::string>& args, std::string message) {
  if (!message.starts_with(":")) return message;
  std::string first;
  for (const CLI::Option* o : app.get_options()) {
    if (!o->get_group().empty()) continue;
    for (const std::string& l : o->get_lnames()) {
      const std::string flag = "--" + l;
      for (size_t i = 0; i < args.size(); ++i) {
        std::string value;
        if (args[i] == flag && i + 1 < args.size())
          value = args[i + 1];
        else if (args[i].starts_with(flag + "="))
          value = args[i].substr(flag.size() + 1);
        else
          continue;
        if (message.find("'" + value + "'") != std::string::npos) return flag + message;
        if (first.empty()) first = flag;
      }
    }
  }
  return first + message;
}

// CLI11 checks the environment's values before it answers --help: a bad
// RDMAPS_ value failed the very page its error pointed to. Asked for help or
// the version, a program gives them whatever else is wrong.
void parse_or_answer(CLI::App& app, std::vector<std::string>& reversed, const std::vector<std::string>& args) {
  const auto asked = [&](std::initializer_list<std::string_view> names) {
    return std::any_of(args.begin(), args.end(),
                       [&](const std::string& a) { return std::find(names.begin(), names.end(), a) != names.end(); });
  };
  try {
    app.parse(reversed);
  } catch (const CLI::Success&) {
    throw;
  } catch (const CLI::ParseError&) {
    if (app.get_help_ptr() == nullptr) throw;
    if (asked({"--help", "-h"})) throw CLI::CallForHelp();
    if (asked({"--version"})) throw CLI::CallForVersion(rdmaps_build_version(), 0);
    throw;
  }
}

}  // namespace

// parse() without its errors' type: they become UsageError there.
static void parse_checked(CLI::App& app, const std::vector<std::string>& args) {
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them last first
  const std::string see_help = app.get_help_ptr() ? " (see --help)" : "";
  // CLI11 takes "--switch ''" and "--switch=" for the switch alone, or leaves
  // it as it was: a value typed empty (an unset shell variable) passed unseen.
  for (size_t i = 0; i < args.size(); ++i)
    for (const CLI::Option* o : app.get_options()) {
      if (o->get_expected_min() != 0 || o->get_expected_max() != 1) continue;
      const std::string name = o->get_name();
      if (args[i] == name + "=" || (args[i] == name && i + 1 < args.size() && args[i + 1].empty()))
        throw Error(Errc::kInvalidArgument, name + ": '' is not on or off (the flag alone is on)" + see_help);
    }
  // CLI11 gives an option that needs a value the next argument whatever it
  // is: "--checkpoint-dir --resume" (an unset $DIR) made a directory named
  // "--resume" and started without resuming.
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--") break;
    if (args[i + 1].rfind("--", 0) != 0 || args[i].rfind("-", 0) != 0) continue;
    for (const CLI::Option* o : app.get_options())
      if (o->get_expected_min() >= 1 && o->check_name(args[i]))
        throw Error(Errc::kInvalidArgument, args[i] + " needs a value, and '" + args[i + 1] +
                                                "' is a flag (to mean it as the value, write " + args[i] + "=" +
                                                args[i + 1] + ")" + see_help);
  }
  // CLI11 takes a variable set to "" for one not set: RDMAPS_LISTEN= served
  // on the default address, RDMAPS_METRICS= turned metrics off.
  const bool help = std::any_of(args.begin(), args.end(),
                                [](const std::string& a) { return a == "--help" || a == "-h" || a == "--version"; });
  for (const CLI::Option* o : app.get_options()) {
    const std::string& variable = o->get_envname();
    if (help || variable.empty() || on_command_line(o, args)) continue;
    if (const char* value = std::getenv(variable.c_str()); value && !*value)
      throw Error(Errc::kInvalidArgument,
                  variable + " is set but empty: give it a value for " + o->get_name() + ", or unset it" + see_help);
  }
  try {
    parse_or_answer(app, reversed, args);
  } catch (const CLI::Success&) {  // --help, --version
    throw;
  } catch (const CLI::ExtrasError&) {
    const auto rest = app.remaining();
    const std::string first = rest.empty() ? std::string("?") : rest.front();
    throw Error(Errc::kInvalidArgument,
                (first.rfind("-", 0) == 0 ? "unknown flag " : "unexpected argument ") + first + see_help);
  } catch (const CLI::ArgumentMismatch& e) {
    std::string message = e.what();
    const auto colon = message.find(':');
    if (message.ends_with(" missing") && colon != std::string::npos)
      throw Error(Errc::kInvalidArgument, "flag " + message.substr(0, colon) + " needs a value" + see_help);
    throw Error(Errc::kInvalidArgument, name_source(app, args, name_hidden(app, args, message)) + see_help);
  } catch (const CLI::ParseError& e) {
    throw Error(Errc::kInvalidArgument, name_source(app, args, name_hidden(app, args, e.what())) + see_help);
  }
}

void parse(CLI::App& app, const std::vector<std::string>& args) {
  try {
    parse_checked(app, args);
  } catch (const CLI::Success&) {
    throw;
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {  // its own, and the checks the parse runs (a final callback's)
    throw UsageError(e.code(), e.what());
  }
}

void parse(CLI::App& app, int argc, char** argv, int first) {
  parse(app, std::vector<std::string>(argv + std::min(first, argc), argv + argc));
}

std::vector<std::string> given(const std::vector<CLI::Option*>& options) {
  std::vector<std::string> out;
  for (const CLI::Option* o : options)
    if (o->count() > 0) out.push_back(o->get_name() + "=" + o->results().back());
  return out;
}

}  // namespace rdmaps::cli
