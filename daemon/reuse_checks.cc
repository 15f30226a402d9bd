#include "daemon/reuse_checks.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace kvcomm::daemon {

Status ReuseCheckConfig::Validate() const {
  if (first > 1'000'000)
    return InvalidArgument("checks.first must be in 0..1000000, got {}", first);
  if (every > 1'000'000)
    return InvalidArgument("checks.every must be in 0..1000000, got {}", every);
  if (!(max_changed >= 0 && max_changed <= 1))
    return InvalidArgument("checks.max_changed must be in [0, 1], got {}", max_changed);
  return Status::Ok();
}

bool ReuseChecks::Gated(const CheckTally& tally) const {
  return config_.first > 0 && tally.checks >= config_.first &&
         static_cast<double>(tally.changed) >
             config_.max_changed * static_cast<double>(tally.checks);
}

std::string SlotFamily(std::string_view slot) {
  const size_t dot = slot.rfind('.');
  if (dot == std::string_view::npos || dot + 1 == slot.size()) return "";
  for (char c : slot.substr(dot + 1))
    if (c < '0' || c > '9') return "";
  return std::string(slot.substr(0, dot)) + ".*";
}

std::vector<std::string> ChargedSlots(std::span<const std::string> slots,
                                      std::span<const std::string> blamed, bool changed) {
  if (!changed) return {};
  if (blamed.empty()) return {slots.begin(), slots.end()};
  // A blamed slot's family shares the blame: its other slots in the turn are estimated alike
  // and are as likely to change a reply, and one turn rarely tells them apart.
  std::set<std::string> families;
  for (const std::string& slot : blamed) families.insert(SlotFamily(slot));
  families.erase("");
  std::vector<std::string> charged;
  for (const std::string& slot : slots)
    if (std::ranges::find(blamed, slot) != blamed.end() || families.contains(SlotFamily(slot)))
      charged.push_back(slot);
  return charged;
}

bool ReuseChecks::Estimates(const Key& key) const {
  std::lock_guard lock(mutex_);
  auto find = [](const std::map<Key, CheckTally>& tallies, const Key& k) -> const CheckTally* {
    auto it = tallies.find(k);
    return it == tallies.end() ? nullptr : &it->second;
  };
  const CheckTally* slot = find(tallies_, key);
  const CheckTally* family =
      find(families_, {key.name_space, key.model, SlotFamily(key.slot), key.agent});
  if ((slot != nullptr && Gated(*slot)) || (family != nullptr && Gated(*family))) return false;
  const CheckTally* agent = find(tallies_, {key.name_space, key.model, "", key.agent});
  if (agent == nullptr || !Gated(*agent)) return true;
  // The agent's replies change too often: only slots its checks cleared go on.
  return slot != nullptr && slot->checks >= config_.first && slot->changed == 0 &&
         (family == nullptr || family->changed == 0);
}

bool ReuseChecks::PlanEstimated(const std::string& name_space, const Hash128& model,
                                std::span<const std::string> slots, const std::string& agent) {
  if (config_.first == 0) return false;
  std::lock_guard lock(mutex_);
  // The steady rate is per agent, not per slot: a turn estimates several slots at once.
  const uint64_t plans = ++tallies_[{name_space, model, "", agent}].plans;
  bool check = config_.every > 0 && plans % config_.every == 0;
  std::set<std::string> families;
  for (const std::string& slot : slots) {
    CheckTally& tally = tallies_[{name_space, model, slot, agent}];
    ++tally.plans;
    check = check || tally.checks < config_.first;
    if (std::string family = SlotFamily(slot); !family.empty()) families.insert(family);
  }
  for (const std::string& family : families) ++families_[{name_space, model, family, agent}].plans;
  return check;
}

Status ReuseChecks::Record(const std::string& name_space, const Hash128& model,
                           std::span<const std::string> slots, std::span<const std::string> blamed,
                           const std::string& agent, bool changed, double next_token_kl) {
  if (!std::isfinite(next_token_kl) || next_token_kl < 0)
    return InvalidArgument("nextTokenKl must be finite and >= 0, got {}", next_token_kl);
  if (!changed && !blamed.empty())
    return InvalidArgument("slots are blamed for a reply that did not change");
  for (const std::string& slot : blamed)
    if (std::ranges::find(slots, slot) == slots.end())
      return InvalidArgument("blamed slot '{}' is not among the checked slots", slot);
  std::lock_guard lock(mutex_);
  auto agent_tally = tallies_.find({name_space, model, "", agent});
  if (agent_tally == tallies_.end())
    return Error(ErrorCode::kNotFound, "no plan estimated anything for agent '{}'", agent);
  const std::vector<std::string> charged = ChargedSlots(slots, blamed, changed);
  // Each tally once, with whether the change counts against it.
  std::map<CheckTally*, bool> outcomes = {{&agent_tally->second, changed}};
  for (const std::string& slot : slots) {
    auto it = tallies_.find({name_space, model, slot, agent});
    if (slot.empty() || it == tallies_.end())
      return Error(ErrorCode::kNotFound, "slot '{}' was never estimated for agent '{}'", slot,
                   agent);
    const bool blames = std::ranges::find(charged, slot) != charged.end();
    outcomes[&it->second] = blames;
    if (std::string family = SlotFamily(slot); !family.empty())
      outcomes[&families_[{name_space, model, family, agent}]] |= blames;
  }
  for (auto& [tally, blames] : outcomes) {
    ++tally->checks;
    tally->changed += blames;
    tally->kl_sum += next_token_kl;
  }
  return Status::Ok();
}

std::vector<ReuseChecks::Entry> ReuseChecks::Snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<Entry> entries;
  for (const auto& [key, tally] : tallies_) entries.push_back({key, false, tally});
  for (const auto& [key, tally] : families_) entries.push_back({key, true, tally});
  return entries;
}

}  // namespace kvcomm::daemon
