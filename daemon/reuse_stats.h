// Reuse statistics of the anchor service, per namespace, agent and placeholder slot.
// Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace kvcomm::daemon {

struct ReuseCounter {
  std::string name_space, agent, slot;  // slot "" for template segments
  uint64_t tokens_requested = 0, tokens_exact = 0, tokens_realigned = 0, tokens_prefill = 0;
  uint64_t anchors_created = 0, anchors_evicted = 0;
  uint64_t bytes_moved = 0;  // KV sent in plans and received in reports
  // Answer-level checks (reuse_checks.h): reported, of which the reply changed, and the
  // placeholder tokens prefilled because checks stopped the slot's estimates for the agent.
  uint64_t checks = 0, checks_changed = 0, tokens_gated = 0;
  double realign_seconds = 0;
  // Time spent answering PlanPrompt (template counter only): realignment, reuse decisions and
  // fetching segments.
  double plan_seconds = 0;
};

class ReuseStats {
 public:
  // Adds `delta`'s numbers to the counter named by its namespace, agent and slot.
  void Add(const ReuseCounter& delta);
  std::vector<ReuseCounter> Snapshot() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, std::string>, ReuseCounter> counters_;
};

}  // namespace kvcomm::daemon
