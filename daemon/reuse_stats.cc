#include "daemon/reuse_stats.h"

namespace kvcomm::daemon {

void ReuseStats::Add(const ReuseCounter& delta) {
  std::lock_guard lock(mutex_);
  auto [it, inserted] = counters_.try_emplace({delta.name_space, delta.agent, delta.slot});
  ReuseCounter& c = it->second;
  if (inserted) {
    c.name_space = delta.name_space;
    c.agent = delta.agent;
    c.slot = delta.slot;
  }
  c.tokens_requested += delta.tokens_requested;
  c.tokens_exact += delta.tokens_exact;
  c.tokens_realigned += delta.tokens_realigned;
  c.tokens_prefill += delta.tokens_prefill;
  c.anchors_created += delta.anchors_created;
  c.anchors_evicted += delta.anchors_evicted;
  c.bytes_moved += delta.bytes_moved;
  c.checks += delta.checks;
  c.checks_changed += delta.checks_changed;
  c.tokens_gated += delta.tokens_gated;
  c.realign_seconds += delta.realign_seconds;
  c.plan_seconds += delta.plan_seconds;
}

std::vector<ReuseCounter> ReuseStats::Snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<ReuseCounter> out;
  out.reserve(counters_.size());
  for (const auto& [key, counter] : counters_) out.push_back(counter);
  return out;
}

}  // namespace kvcomm::daemon
