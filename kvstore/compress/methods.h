// The compression methods, one registry. Token-selection methods score every cached token per
// layer and kv head (higher = keep) and say which tokens they always keep (attention sinks, a
// recent window); compress.h then allocates the budget, selects and encodes. Quantization
// methods keep every token and only encode (codec.h).
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/kv_layout.h"
#include "kvstore/compress/spec.h"

namespace kvcomm::kvstore::compress {

// One layer of the cache (fp32), and the observation window's queries when the agent sent them.
struct LayerView {
  const float* keys = nullptr;    // [kv_heads][tokens][head_dim], after RoPE
  const float* values = nullptr;  // [kv_heads][tokens][head_dim]
  // [q_heads][window][head_dim]: the queries of the last `window` tokens, or null.
  const float* queries = nullptr;
  int64_t q_heads = 0, window = 0;
  bool queries_follow = false;  // of tokens after the segment: they see every token
  // RoPE of the keys (head_dim / 2 inverse frequencies; token t sits at first_position + t),
  // for methods that score pre-RoPE keys; empty when the request did not give it.
  std::span<const float> inv_freq;
  int32_t first_position = 0;
  // The share of the segment's tokens the request keeps on average (in (0, 1]).
  double keep_fraction = 1;
};

class TokenScorer {
 public:
  virtual ~TokenScorer() = default;
  // Fills scores[kv_head][token]; `layout` gives the shape (its dtype is irrelevant here).
  virtual Status Score(const KvLayout& layout, const LayerView& layer,
                       std::span<float> scores) const = 0;
  // First / last tokens always kept when a (layer, head) keeps `kept` tokens.
  virtual int64_t sinks() const { return 0; }
  virtual int64_t recent(int64_t /*kept*/) const { return 0; }
  virtual bool needs_queries() const { return false; }
  // Called once the layer's heads have their counts (kept[kv_head]) and the always-kept tokens
  // score +inf: methods whose choice depends on the count (KVCrush's representatives of what
  // would be evicted) adjust the scores here.
  virtual Status Refine(const KvLayout& /*layout*/, const LayerView& /*layer*/,
                        std::span<const uint32_t> /*kept*/, std::span<float> /*scores*/) const {
    return Status();
  }
  // Methods that merge what they evict (D2O) fold the evicted tokens of one kv head into the
  // kept rows: `kept` are the kept positions (ascending), keys / values their rows
  // ([kept][head_dim], copies of the layer's), changed in place.
  virtual void MergeEvicted(const KvLayout& /*layout*/, const LayerView& /*layer*/,
                            int64_t /*head*/, std::span<const int32_t> /*kept*/,
                            std::span<float> /*keys*/, std::span<float> /*values*/) const {}
};

struct MethodInfo {
  std::string name;
  std::string help;  // one line: what it scores, its paper's defaults
  bool selects_tokens = true;
};
// Every method, in the order `kvcommctl compress --list` shows them.
const std::vector<MethodInfo>& Methods();

// A token-selection method with its parameters checked; unknown names and parameters are
// refused with the reason (a quantization method is refused here: it does not score).
Result<std::unique_ptr<TokenScorer>> MakeScorer(const MethodSpec& spec);

}  // namespace kvcomm::kvstore::compress
