#include "src/ps/admission.h"

#include <unistd.h>

#include "rdmaps/error.h"
#include "src/ps/partition.h"
#include "transport/auth.h"

namespace rdmaps::ps {

std::string server_tag(const ServerOptions& options) {
  if (options.servers <= 1) return "rdmaps-server";
  return "rdmaps-server " + std::to_string(options.index) + "/" + std::to_string(options.servers);
}

uint32_t refusal_code(const Error& e) {
  const Errc c = e.code();
  return c == Errc::kPermissionDenied || c == Errc::kInvalidArgument || c == Errc::kProtocol ? kRefused
                                                                                             : kRefusedForNow;
}

std::string bound_text(uint64_t staleness) {
  return staleness == kInfiniteStaleness ? std::string("inf (async)") : std::to_string(staleness);
}

uint64_t table_limit_bytes(const ServerOptions& options) {
  if (options.max_bytes) return options.max_bytes;
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : uint64_t{1} << 36;
}

std::string table_over_limit(const std::vector<TensorDecl>& tensors, uint32_t shard_floats,
                             const ServerOptions& options) {
  uint64_t floats = 0;
  for (const auto& t : tensors) floats += t.floats;
  uint64_t share = floats;
  if (options.servers > 1) try {
      share = Partition(tensors, options.servers, shard_floats).server_range(options.index).size();
    } catch (const Error&) {
      // A table that cannot be laid out is refused for that where it is laid out.
    }
  const uint64_t limit = table_limit_bytes(options);
  if (share * sizeof(float) <= limit) return {};
  const std::string size = std::to_string(share) + " floats (" + std::to_string(share * sizeof(float)) + " bytes)";
  return (share == floats
              ? "its declared table of " + size
              : "this server's share of its declared table of " + std::to_string(floats) + " floats, " + size + ",") +
         " is over this server's limit of " + std::to_string(limit) + " bytes (--max-bytes)";
}

Admission::Admission(const ServerOptions& options) : options_(options), config_(options.config) {
  while (offer_ == 0) transport::random_bytes(&offer_, sizeof(offer_));
}

std::string Admission::check(const Hello& hello) const {
  if (hello.workers && hello.workers != options_.workers)
    return "it was started for " + std::to_string(hello.workers) + " workers, this server for " +
           std::to_string(options_.workers) + " (--workers must agree)";
  if (config_.staleness_stated && hello.staleness != config_.staleness)
    return "its staleness bound is " + bound_text(hello.staleness) + ", this server's " +
           bound_text(config_.staleness) + " (--staleness, --sync or --async must agree)";
  if (has_table() && hello.staleness != staleness_)
    return "its staleness bound is " + bound_text(hello.staleness) + ", " + fixed_by_ + " " + bound_text(staleness_) +
           " (--staleness, --sync or --async must agree)";
  if (hello.servers && (hello.servers != options_.servers || hello.server_index != options_.index))
    return "it has this server as index " + std::to_string(hello.server_index) + " of " +
           std::to_string(hello.servers) + ", this server is index " + std::to_string(options_.index) + " of " +
           std::to_string(options_.servers) + " (the server list must name every server of the job, in index order)";
  if (hello.servers && hello.shard_floats != config_.shard_floats)
    return "its shards are of " + std::to_string(hello.shard_floats) + " floats, this server's of " +
           std::to_string(config_.shard_floats) + " (--shard-floats must agree)";
  if (hello.worker >= options_.workers)
    return "worker id " + std::to_string(hello.worker) + " is not below the " + std::to_string(options_.workers) +
           " workers this server expects (--workers)";
  // The server applies one rule: a worker that asked for another would train
  // with a rule it did not ask for.
  if (!options_.rule_from_workers && hello.rule_stated)
    if (std::string d = hello.rule.difference(RuleParams::from(config_)); !d.empty())
      return "its update rule differs from this server's (" + d +
             ", the worker's first): give both the same --rule and its parameters, or start the server with "
             "--rule-from-workers";
  // The rule this server is to run with, refused as the command line would
  // refuse it: an eps of 0 or a negative ms-momentum made the model NaN.
  if (options_.rule_from_workers && !has_table())
    if (std::string why = hello.rule.out_of_range(); !why.empty()) return "its update rule cannot be adopted: " + why;
  if (options_.rule_from_workers && has_table())
    if (std::string d = RuleParams::from(config_).difference(hello.rule); !d.empty())
      return std::string("its update rule differs from ") + fixed_by_ + " (" + d + ", that one first)";
  // Its checkpoints say which: a server resumed from another run's joined
  // half a model to half of another (servers resume each its newest file).
  if (job_ && hello.job && hello.job != job_)
    return "it joins job " + job_text(hello.job) + ", this server holds job " + job_text(job_) + " (" + fixed_by_ +
           "): every server of a job resumes that job's checkpoints";
  if (!has_table()) {
    // Checked before anything is sized from the table. Decode bounds each
    // tensor below 2^40 floats and their count below 2^20.
    return table_over_limit(hello.tensors, config_.shard_floats, options_);
  }
  auto describe = [](const TensorDecl& t) { return "'" + t.name + "' of " + std::to_string(t.floats) + " floats"; };
  const std::string whose = std::string("its declared tensors differ from ") + fixed_by_ + " table: ";
  for (size_t i = 0; i < std::min(hello.tensors.size(), table_.size()); ++i)
    if (hello.tensors[i].name != table_[i].name || hello.tensors[i].floats != table_[i].floats)
      return whose + "tensor " + std::to_string(i) + " is " + describe(hello.tensors[i]) + ", there " +
             describe(table_[i]);
  if (hello.tensors.size() != table_.size())
    return whose + std::to_string(hello.tensors.size()) + " tensors, there " + std::to_string(table_.size());
  return {};
}

Config Admission::config_for(const Hello& hello) const {
  Config c = config_;
  if (options_.rule_from_workers && !has_table()) hello.rule.apply_to(c);
  return c;
}

bool Admission::admit(const Hello& hello) {
  // A Hello without one (made by hand) fixes none where other servers may
  // hold the job: they would refuse this one's every worker.
  if (!job_) job_ = hello.job ? hello.job : options_.servers == 1 ? offer_ : 0;
  if (has_table()) return false;
  staleness_ = hello.staleness;
  config_ = config_for(hello);
  table_ = hello.tensors;
  return true;
}

void Admission::restore(const std::vector<TensorDecl>& table, uint64_t staleness, const Config& config, uint64_t job) {
  // A checkpoint too old to name its job: server 0's offer names it from now
  // on (workers take it from its probe), else no Hello ever would.
  job_ = job ? job : options_.index == 0 ? offer_ : 0;
  table_ = table;
  staleness_ = staleness;
  config_ = config;
  fixed_by_ = "the resumed checkpoint's";
}

}  // namespace rdmaps::ps
