#include "bench/perf_options.h"

namespace rdmaps::bench {

CLI::Option* add_size(CLI::App& app, const std::string& name, uint64_t& target, uint64_t min, uint64_t max,
                      const std::string& help) {
  return app.add_option(name, target, help)
      ->transform(CLI::AsSizeValue(false).description(""))
      ->check(cli::count(min, max))
      ->type_name("SIZE")
      ->capture_default_str();
}

CLI::Option* add_sizes(CLI::App& app, const std::string& name, std::vector<uint64_t>& target, uint64_t min,
                       uint64_t max, const std::string& help) {
  return app.add_option(name, target, help)
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->transform(CLI::AsSizeValue(false).description(""))
      ->check(cli::count(min, max))
      ->type_name("SIZE,...");
}

bool parse(CLI::App& app, int argc, char** argv, int first) {
  try {
    cli::parse(app, argc, argv, first);
  } catch (const CLI::CallForHelp& e) {
    app.exit(e);
    return false;
  }
  return true;
}

}  // namespace rdmaps::bench
