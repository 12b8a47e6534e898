#include "src/admission.h"

namespace rdmaps::ps {

std::string Admission::check(const Hello& hello) const {
  if (hello.secret_digest != secret_digest(options_.config.secret))
    return "wrong shared secret (--secret / RDMAPS_SECRET)";
  if (hello.worker >= options_.workers)
    return "worker id " + std::to_string(hello.worker) + " is not below the " + std::to_string(options_.workers) +
           " workers this server expects (--workers)";
  if (options_.rule_from_workers && has_table())
    if (std::string d = RuleParams::from(config_).difference(hello.rule); !d.empty())
      return "its update rule differs from the one adopted from the first worker (" + d + ", adopted first)";
  if (!has_table()) return {};
  bool same = hello.tensors.size() == table_.size();
  for (size_t i = 0; same && i < table_.size(); ++i)
    same = hello.tensors[i].name == table_[i].name && hello.tensors[i].floats == table_[i].floats;
  if (!same) return "its declared tensors differ from the other workers' (names, order or sizes)";
  return {};
}

Config Admission::config_for(const Hello& hello) const {
  Config c = config_;
  if (options_.rule_from_workers && !has_table()) hello.rule.apply_to(c);
  return c;
}

bool Admission::admit(const Hello& hello) {
  if (has_table()) return false;
  config_ = config_for(hello);
  table_ = hello.tensors;
  return true;
}

}  // namespace rdmaps::ps
