#include "daemon/reuse_checks.h"

#include <cmath>

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

bool ReuseChecks::Estimates(const Key& key) const {
  std::lock_guard lock(mutex_);
  for (const Key& k : {key, Key{key.name_space, key.model, "", key.agent}}) {
    auto it = tallies_.find(k);
    if (it != tallies_.end() && Gated(it->second)) return false;
  }
  return true;
}

bool ReuseChecks::PlanEstimated(const std::string& name_space, const Hash128& model,
                                std::span<const std::string> slots, const std::string& agent) {
  if (config_.first == 0) return false;
  std::lock_guard lock(mutex_);
  // The steady rate is per agent, not per slot: a turn estimates several slots at once.
  const uint64_t plans = ++tallies_[{name_space, model, "", agent}].plans;
  bool check = config_.every > 0 && plans % config_.every == 0;
  for (const std::string& slot : slots) {
    CheckTally& tally = tallies_[{name_space, model, slot, agent}];
    ++tally.plans;
    check = check || tally.checks < config_.first;
  }
  return check;
}

Status ReuseChecks::Record(const std::string& name_space, const Hash128& model,
                           std::span<const std::string> slots, const std::string& agent,
                           bool changed, double next_token_kl) {
  if (!std::isfinite(next_token_kl) || next_token_kl < 0)
    return InvalidArgument("nextTokenKl must be finite and >= 0, got {}", next_token_kl);
  std::lock_guard lock(mutex_);
  auto agent_tally = tallies_.find({name_space, model, "", agent});
  if (agent_tally == tallies_.end())
    return Error(ErrorCode::kNotFound, "no plan estimated anything for agent '{}'", agent);
  std::vector<CheckTally*> tallies = {&agent_tally->second};
  for (const std::string& slot : slots) {
    auto it = tallies_.find({name_space, model, slot, agent});
    if (slot.empty() || it == tallies_.end())
      return Error(ErrorCode::kNotFound, "slot '{}' was never estimated for agent '{}'", slot,
                   agent);
    tallies.push_back(&it->second);
  }
  // The outcome is the turn's: every slot it estimated shares it, and so does the agent.
  for (CheckTally* tally : tallies) {
    ++tally->checks;
    tally->changed += changed;
    tally->kl_sum += next_token_kl;
  }
  return Status::Ok();
}

std::vector<std::pair<ReuseChecks::Key, CheckTally>> ReuseChecks::Snapshot() const {
  std::lock_guard lock(mutex_);
  return {tallies_.begin(), tallies_.end()};
}

}  // namespace kvcomm::daemon
