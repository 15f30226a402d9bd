// Answer-level checks of reuse (../shared/KVCOMM.md, "measured fidelity"): kvcommd asks agents
// now and then to compute a turn that reused estimated KV in full as well and to tell whether
// the reply changed. It tallies the outcomes per namespace, model, slot and agent, and per
// agent over all its slots; a slot whose estimates change an agent's replies too often stops
// being estimated for that agent, and an agent whose replies change too often gets no
// estimates at all (its placeholders are prefilled). A turn's outcome is shared by every slot
// it estimated, so the agent's tally judges from more checks than any one slot's. The KV error of
// an estimate does not tell which slots matter for answers (bench/RESULTS.md): a changed reply
// does.
//
// Kept in memory: a restarted kvcommd checks again. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "common/keys.h"
#include "common/status.h"

namespace kvcomm::daemon {

struct ReuseCheckConfig {
  // The first `first` plans that estimate a slot for an agent are all checked; 0 turns checks
  // (and so the gate) off.
  uint32_t first = 2;
  // After those, one in `every` of an agent's plans that estimate anything is checked (0: no
  // more checks).
  uint32_t every = 100;
  // A slot stops being estimated for an agent (or the agent for all slots) once at least
  // `first` checks were made and more than this share of them changed the reply.
  double max_changed = 0.25;
  Status Validate() const;
};

struct CheckTally {
  uint64_t plans = 0;    // plans that estimated the slot for the agent
  uint64_t checks = 0;   // of those, checked and reported
  uint64_t changed = 0;  // of the checks, the reply changed
  double kl_sum = 0;     // next-token KL(full || reuse) summed over the checks, nats
};

class ReuseChecks {
 public:
  struct Key {
    std::string name_space;
    Hash128 model;
    std::string slot, agent;
    auto operator<=>(const Key&) const = default;
  };

  explicit ReuseChecks(ReuseCheckConfig config) : config_(config) {}

  // False once the slot's estimates, or any of the agent's, changed its replies too often.
  bool Estimates(const Key& key) const;
  // Counts a plan that estimated `slots` for `agent` (each once) and says whether to check it:
  // some slot has had fewer than `first` checks, or the agent's count of such plans is a
  // multiple of `every`.
  bool PlanEstimated(const std::string& name_space, const Hash128& model,
                     std::span<const std::string> slots, const std::string& agent);
  // Records a check's outcome for every slot the turn estimated and for the agent. NotFound
  // for a slot this agent was never estimated in (nothing to check).
  Status Record(const std::string& name_space, const Hash128& model,
                std::span<const std::string> slots, const std::string& agent, bool changed,
                double next_token_kl);
  // Every tally; the agents' own ones have slot "".
  std::vector<std::pair<Key, CheckTally>> Snapshot() const;

 private:
  bool Gated(const CheckTally& tally) const;

  ReuseCheckConfig config_;
  mutable std::mutex mutex_;
  // Per slot and agent, and per agent over all its slots (slot "").
  std::map<Key, CheckTally> tallies_;
};

}  // namespace kvcomm::daemon
