#include "src/launch/rendezvous_roll.h"

#include "src/api/utf8.h"

namespace rdmaps::launch {

std::string ranges_of(const std::vector<uint32_t>& ranks) {
  std::string text;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    text += (text.empty() ? "" : ",") + std::to_string(ranks[i]);
    if (j > i) text += "-" + std::to_string(ranks[j]);
    i = j + 1;
  }
  return text;
}

std::string RendezvousRoll::arrive(uint32_t rank, const std::string& address, const std::string& process) {
  if (address != "-") {
    std::string& slot = addresses_[rank];
    if (!slot.empty() && slot != address)
      return "server rank " + std::to_string(rank) + " registered twice (" + slot + " and " + address +
             "): two processes believe they are rank " + std::to_string(rank) +
             "; do launcher variables disagree (a RANK exported by hand)?";
    if (slot.empty()) ++registered_, missing_.reset();
    slot = address;
  }
  if (!present_[rank]) present_[rank] = true, ++present_count_, missing_.reset();
  processes_[rank] = process;
  refusals_.erase(rank);
  complete_ = complete_ || (present_count_ == present_.size() && registered_ == addresses_.size());
  return "";
}

void RendezvousRoll::leave(uint32_t rank) {
  if (complete_ || !present_[rank]) return;
  present_[rank] = false, --present_count_, missing_.reset();
  if (rank < addresses_.size() && !addresses_[rank].empty()) addresses_[rank].clear(), --registered_;
}

void RendezvousRoll::refused(uint64_t rank, const std::string& why, bool proven) {
  if (rank >= present_.size() || present_[rank]) return;
  auto& [kept, kept_proven] = refusals_[static_cast<uint32_t>(rank)];
  if (kept_proven && !proven) return;
  kept = one_line(why).substr(0, 300);
  kept_proven = proven;
}

std::string RendezvousRoll::answer() {
  if (complete_) {
    std::string all = "ok ";
    for (size_t i = 0; i < addresses_.size(); ++i) all += (i ? "," : "") + addresses_[i];
    return all;
  }
  if (!missing_) {
    std::vector<uint32_t> ranks;
    for (uint32_t r = 0; r < present_.size(); ++r)
      if (!present_[r] || (r < addresses_.size() && addresses_[r].empty())) ranks.push_back(r);
    missing_ = "wait missing " + ranges_of(ranks);
  }
  std::string text = *missing_;
  size_t quoted = 0;
  for (const bool proven : {true, false})
    for (const auto& [rank, refusal] : refusals_)
      if (refusal.second == proven && ++quoted <= 3)
        text += "\nrank " + std::to_string(rank) +
                (proven ? " was refused " : " may have been refused (a request naming it proved no secret) ") +
                refusal.first;
  return text;
}

}  // namespace rdmaps::launch
