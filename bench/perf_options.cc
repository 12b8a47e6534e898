#include "bench/perf_options.h"

#include <algorithm>
#include <span>

namespace rdmaps::bench {

CLI::Option* add_size(CLI::App& app, const std::string& name, uint64_t& target, uint64_t min, uint64_t max,
                      const std::string& help) {
  CLI::Option* o =
      app.add_option(name, target, help)->transform(cli::size(min, max))->type_name("SIZE")->capture_default_str();
  // A 0 that the range refuses is no value but "computed" (the help says how).
  if (target == 0 && min > 0) o->default_str("auto");
  return o;
}

// Split here, not by CLI11's delimiter, which drops an empty entry: "8,,64"
// ran 8 and 64 without a word.
CLI::Option* add_sizes(CLI::App& app, const std::string& name, std::vector<uint64_t>& target, uint64_t min,
                       uint64_t max, const std::string& help) {
  return app
      .add_option_function<std::vector<std::string>>(
          name,
          [&target, name, min, max](const std::vector<std::string>& lists) {
            target.clear();
            CLI::Validator as_size = cli::size(min, max);
            // Given twice, the last list, as every flag here (CLI11 hands them all over).
            for (const std::string& list : std::span(lists).last(std::min<size_t>(lists.size(), 1))) {
              size_t from = 0;
              for (;;) {
                const size_t comma = std::min(list.find(',', from), list.size());
                std::string size = list.substr(from, comma - from);
                if (size.empty()) throw CLI::ValidationError(name, "'" + list + "' has an empty entry");
                const std::string why = as_size(size);  // names the value
                if (!why.empty()) throw CLI::ValidationError(name, why);
                target.push_back(std::stoull(size));
                if (comma == list.size()) break;
                from = comma + 1;
              }
            }
          },
          help)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->type_name("SIZE,...");
}

bool parse(CLI::App& app, int argc, char** argv, int first) {
  try {
    cli::parse(app, argc, argv, first);
  } catch (const CLI::Success& e) {  // --help, --version
    app.exit(e);
    return false;
  }
  return true;
}

}  // namespace rdmaps::bench
