// The KVCOMM anchor pool (../shared/KVCOMM.md): per placeholder slot, earlier placeholder
// samples ("anchors") whose deviation from their base KV was observed in agents' prompts, the
// rule that decides whether a new placeholder can reuse them, and the blend weights.
//
// KV arrays here are fp32 host copies in the segment layout ([layer][K|V][kv_heads][tokens]
// [head_dim], common/kv_layout.h). Bases and deltas themselves live in the tiered store; a slot
// only keeps their keys and bookkeeping.
//
// Thread safety: AnchorSlot is not thread-safe; the daemon guards each slot with its own lock.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/keys.h"
#include "common/kv_layout.h"
#include "common/status.h"

namespace kvcomm::daemon {

struct AnchorPoolConfig {
  uint32_t capacity = 20;          // anchors per placeholder slot
  uint32_t eviction_window = 5;    // eviction looks at this many oldest anchors
  double entropy_threshold = 0.3;  // reuse only if H <= threshold * log2(#candidates)
  double top_p = 0.9;              // anchors in this much weight mass are credited
  // Softmax temperature of the blend weights. KVCOMM uses 1; on models/kvcomm-tiny 0.1 gave
  // lower next-token KL (bench/RESULTS.md), as the weights then follow the closest anchor.
  double temperature = 0.1;
  // Reuse also needs the closest candidate within this relative distance of the new
  // placeholder (||V_P - V_anchor|| / ||V_P|| over the placeholder's tokens); 0: no limit.
  // KVCOMM's entropy rule alone asks only whether one anchor stands out, not whether it is
  // close; on models/kvcomm-tiny without this limit reuse cost up to 6 accuracy points
  // (bench/RESULTS.md).
  double max_relative_distance = 1.0;
  // A placeholder that is itself an anchor, asked for by an agent without its own delta for it:
  // serve it with another agent's delta (its KV as that agent's prompt held it, moved to this
  // position) instead of having this agent prefill and report too. KVCOMM has every agent
  // report. On models/kvcomm-tiny, with answer-level checks (reuse_checks.h), it kept or
  // improved accuracy on every task type and took long context from 0% to 42% placeholder
  // reuse (bench/RESULTS.md).
  bool borrow_deltas = true;
  Status Validate() const;
};

// A KV segment held as fp32 on the host (layout.dtype must be F32).
struct KvView {
  const float* data = nullptr;
  KvLayout layout;
};

struct ReuseDecision {
  bool prefill = true;           // no anchor close enough: compute in full, become an anchor
  std::vector<size_t> credited;  // indices (into the anchors given) to credit one activation
  double entropy = 0;            // of the softmax over -||dV||, in bits
  double limit = 0;              // threshold * log2(#candidates)
  double relative_distance = 0;  // of the closest candidate
  // The candidates' per-token distance sums (kernels::cpu::AnchorDistances, [candidate][token]
  // [3]), so the blend weights of a reused placeholder need not compute them again.
  std::vector<float> token_sums;
};

// KVCOMM's decision for a new placeholder: candidates are anchors with at least as many tokens;
// with fewer than two, or an entropy above the limit, prefill. Distances are L2 norms of the
// value differences over the candidate's tokens, all layers and heads.
ReuseDecision DecideReuse(const KvView& candidate, const std::vector<KvView>& anchors,
                          const AnchorPoolConfig& config);

// The same decision from the candidates' per-token distance sums (kernels::cpu::AnchorDistances
// against the new placeholder, [candidate][token][3]) and the sum of squares of the
// placeholder's values: `candidates` are the indices (in the caller's anchor list) of the sums'
// rows, all at least `tokens` long.
ReuseDecision DecideReuseFromSums(std::vector<float> token_sums,
                                  const std::vector<size_t>& candidates, uint32_t tokens,
                                  double value_squared_norm, const AnchorPoolConfig& config);

// Per-token blend weights over anchors, [anchor][token], separately for keys and values:
// softmax over anchors of -mean|base(P) - base(anchor)| / temperature at that token (mean over
// layers, heads and dims). These are the weights kernels/realign.h applies.
struct BlendWeights {
  std::vector<float> key;
  std::vector<float> value;
};
BlendWeights PlaceholderWeights(const KvView& candidate, const std::vector<KvView>& anchors,
                                double temperature);
// The same from those sums of `anchors` anchors (ReuseDecision::token_sums when every anchor
// was a candidate); `candidate` gives the geometry.
BlendWeights PlaceholderWeights(std::span<const float> token_sums, size_t anchors,
                                const KvLayout& candidate, double temperature);

// Blend weights for the template segment that follows the placeholder, per channel:
// [anchor][layer][K|V][kv_head][head_dim], softmax over anchors of
// -||base(P) - base(anchor)||_2 / temperature, the norm taken along the placeholder's tokens.
// (That segment's tokens differ from the placeholder's, so its weights cannot be per token.)
std::vector<float> FollowingSegmentWeights(const KvView& candidate,
                                           const std::vector<KvView>& anchors, double temperature);

// One placeholder slot's anchors, oldest first.
class AnchorSlot {
 public:
  struct AgentDeltas {
    SegmentKey placeholder;  // deltaP for this agent (position-free keys)
    SegmentKey following;    // deltaT of the template segment after the placeholder
  };
  struct Anchor {
    SegmentKey base;  // base KV of the placeholder content
    uint32_t tokens = 0;
    uint64_t activations = 0;
    std::map<std::string, AgentDeltas> deltas;  // by agent name
  };

  explicit AnchorSlot(const AnchorPoolConfig& config) : config_(config) {}

  const std::vector<Anchor>& anchors() const { return anchors_; }
  // Indices of the anchors at least `tokens` long.
  std::vector<size_t> CandidatesFor(uint32_t tokens) const;
  // Adds an anchor (replacing one with the same base). At capacity, first evicts the anchor
  // with the fewest activations among the eviction_window oldest (the oldest on ties) and
  // returns it, so its segments can be released.
  std::optional<Anchor> Add(Anchor anchor);
  void Credit(const std::vector<size_t>& indices);
  // Records (or replaces) an agent's deltas for the anchor with `base`; false if none.
  bool SetDeltas(const SegmentKey& base, const std::string& agent, AgentDeltas deltas);

 private:
  AnchorPoolConfig config_;
  std::vector<Anchor> anchors_;
};

}  // namespace kvcomm::daemon
