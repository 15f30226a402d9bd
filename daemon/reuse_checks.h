// Answer-level checks of reuse (../shared/KVCOMM.md, "measured fidelity"): kvcommd asks agents
// now and then to compute a turn that reused estimated KV in full as well and to tell whether
// the reply changed, and which of the estimated slots changed it on their own (the agent tries
// each alone). It tallies the outcomes per namespace, model, slot and agent, and per agent over
// each family of its slots (slots named alike but for a final ".N" index: an agent's messages
// "message.0", "message.1", ... are one family), and per agent. A slot whose estimates change an
// agent's replies too often stops being estimated for that agent, and so does every slot of a
// family whose estimates together did: a family's tally judges from more checks than any one
// slot's. An agent whose replies change too often over all its checks keeps only the slots its
// checks cleared (checked `first` times, never blamed, nor their family). A blamed slot's family
// shares its blame; a change no slot is blamed for is blamed on every slot the turn estimated. The
// KV error of an estimate does not tell which slots matter for answers (bench/RESULTS.md): a
// changed reply does.
//
// Kept in memory: a restarted kvcommd checks again. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
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
  // `first` checks were made and more than this share of them changed the reply. With anchors
  // reported over estimates (the agents' default) 0.25 let aggregators' messages, estimated
  // with a change in 1 of 5 checks, change 29 of 250 final answers; 0.1 stops them
  // (bench/RESULTS.md, session 19).
  double max_changed = 0.1;
  Status Validate() const;
};

struct CheckTally {
  uint64_t plans = 0;    // plans that estimated the slot for the agent
  uint64_t checks = 0;   // of those, checked and reported
  uint64_t changed = 0;  // of the checks, the reply changed
  double kl_sum = 0;     // next-token KL(full || reuse) summed over the checks, nats
};

// "message.*" for "message.2" (or "t/message.2"); "" for a slot without a final ".N" index.
std::string SlotFamily(std::string_view slot);

// Of a checked turn's `slots`, those its changed reply counts against: the `blamed` ones and the
// other slots of their families, or all of them when `blamed` is empty; none if unchanged.
std::vector<std::string> ChargedSlots(std::span<const std::string> slots,
                                      std::span<const std::string> blamed, bool changed);

class ReuseChecks {
 public:
  struct Key {
    std::string name_space;
    Hash128 model;
    std::string slot, agent;
    auto operator<=>(const Key&) const = default;
  };

  explicit ReuseChecks(ReuseCheckConfig config) : config_(config) {}

  // False once the slot's estimates, or its family's, changed the agent's replies too often, or
  // the agent's did and the slot is not cleared.
  bool Estimates(const Key& key) const;
  // Counts a plan that estimated `slots` for `agent` (each once) and says whether to check it:
  // some slot has had fewer than `first` checks, or the agent's count of such plans is a
  // multiple of `every`.
  bool PlanEstimated(const std::string& name_space, const Hash128& model,
                     std::span<const std::string> slots, const std::string& agent);
  // Records a check's outcome for every slot the turn estimated, their families and the agent:
  // a changed reply counts against the ChargedSlots (`blamed`: a subset of `slots`). NotFound for
  // a slot this agent was never estimated in (nothing to check), InvalidArgument for a blamed slot
  // not among `slots` or blame without a change.
  Status Record(const std::string& name_space, const Hash128& model,
                std::span<const std::string> slots, std::span<const std::string> blamed,
                const std::string& agent, bool changed, double next_token_kl);
  struct Entry {
    Key key;              // the agents' own tallies have slot ""
    bool family = false;  // then key.slot is the family ("message.*")
    CheckTally tally;
  };
  std::vector<Entry> Snapshot() const;

 private:
  bool Gated(const CheckTally& tally) const;

  ReuseCheckConfig config_;
  mutable std::mutex mutex_;
  // Per slot and agent, and per agent (slot "").
  std::map<Key, CheckTally> tallies_;
  // Per family of slots (key.slot: SlotFamily) and agent.
  std::map<Key, CheckTally> families_;
};

}  // namespace kvcomm::daemon
