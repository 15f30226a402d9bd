// MorphKV (Ghadia et al. 2025): a constant-size cache while decoding. After every step each kv
// head keeps the `recent` latest tokens and, of the older ones, the `capacity - recent` that
// the recent tokens' queries attend to most (summed over those queries and the head's query
// group); the rest are dropped from attention for good (KvCache::Drop). CPU backend.
#pragma once

#include <deque>
#include <vector>

#include "agents/runtime/kv_cache.h"
#include "agents/runtime/model.h"

namespace kvcomm::runtime {

struct MorphKvOptions {
  int64_t capacity = 0;  // tokens each kv head keeps; 0 turns MorphKV off
  int64_t recent = 16;   // the latest tokens, always kept; their queries choose the others
  Status Validate() const;
};

class MorphKv {
 public:
  MorphKv(const ModelConfig& config, MorphKvOptions options);
  // Remembers the last `recent` queries of a Forward's capture ([layer][q_head][n][head_dim]).
  void Observe(const QueryCapture& capture);
  // Drops, per layer and kv head, the older entries beyond capacity that the remembered
  // queries attend to least.
  Status Trim(KvCache& cache) const;

 private:
  int64_t layers_, heads_, kv_heads_, head_dim_;
  MorphKvOptions options_;
  std::deque<std::vector<float>> queries_;  // per remembered token: [layer][q_head][head_dim]
};

}  // namespace kvcomm::runtime
