// How a token budget is spread over the layers and kv heads of a segment (the "allocate" step of
// score -> allocate -> select -> encode). An allocator spec names the layer rule and, as the
// parameter heads=, the head rule:
//   uniform                every layer keeps the average;
//   pyramid:beta=20        PyramidKV: linearly more in lower layers, the top layer average / beta;
//   cake:tau1=1,tau2=1,window=32
//                          CAKE: layer l's share is proportional to its preference
//                          H_l^(1/tau1) * V_l^(1/tau2), H_l the entropy of the observation
//                          window's mean attention (spatial dispersion), V_l the attention's
//                          variance over the window's queries (temporal shift), both averaged
//                          over the layer's query heads, from the last `window` queries sent;
//   lava                   LAVa: layer l's share is proportional to the normalised entropy of
//                          its scores (all heads and tokens as one distribution: layers whose
//                          scores spread wider need more); heads=ada by default;
//   d2o                    D2O: layer l's share inversely proportional to the variance of its
//                          attention density (the method's scores, each head's normalised);
//   ...,heads=ada,floor=20 AdaKV: inside each layer the heads share the layer's budget by the
//                          method's scores (each head's scores normalised to sum 1, the
//                          layer's largest taken across heads), every head keeping at least
//                          floor percent of the layer's average (heads=uniform: all the same).
// Totals are exact: the counts add up to average x layers x kv heads.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "common/kv_layout.h"
#include "kvstore/compress/spec.h"

namespace kvcomm::kvstore::compress {

struct AllocatorSpec {
  enum class Layers { kUniform, kPyramid, kCake, kLava, kD2o };
  Layers layers = Layers::kUniform;
  int64_t beta = 20;            // pyramid
  double tau1 = 1, tau2 = 1;    // cake
  int64_t window = 32;          // cake: the last queries sent that it reads
  bool adaptive_heads = false;  // heads=ada
  int64_t floor_percent = 20;   // ada
};
Result<AllocatorSpec> ParseAllocator(const MethodSpec& spec);

// What score-aware layer rules read: the observation window (cake) and the method's scores
// (lava).
struct AllocationInputs {
  std::span<const float> kv;       // [layer][K|V][kv_head][token][dim]
  std::span<const float> queries;  // [layer][q_head][window][dim], or empty
  int64_t q_heads = 0, window = 0;
  std::span<const float> scores;  // [layer][kv_head][token], the method's raw scores
};

// Tokens kept by each layer (every head of it), for a per-layer-and-head average of `average`;
// `least` is the fewest a layer may keep (what the method always keeps).
Result<std::vector<int64_t>> AllocateLayers(const AllocatorSpec& spec, const KvLayout& layout,
                                            int64_t average, int64_t least,
                                            const AllocationInputs& inputs);

// Splits `layer_total` tokens over the kv heads of one layer by AdaKV's rule: the largest
// scores across heads win, each head's scores divided by their sum first when `normalise`
// (AdaKV), or as they are (LAVa's scores already compare across heads). scores:
// [kv_head][token], +inf for the tokens a head must keep (counted in its share); every head
// gets at least max(floor, its forced tokens) and at most `tokens`. Negative scores are refused.
Result<std::vector<uint32_t>> AllocateHeads(std::span<const float> scores, int64_t kv_heads,
                                            int64_t tokens, int64_t layer_total, int64_t floor,
                                            bool normalise);

// DuoAttention's split: the `retrieval` (layer, kv head)s with the highest head_scores keep
// all `tokens`, every other head keeps `streaming` tokens (sinks + recent). Returns counts per
// (layer, kv head).
std::vector<uint32_t> DuoHeadCounts(std::span<const float> head_scores, int64_t retrieval,
                                    int64_t tokens, int64_t streaming);

}  // namespace kvcomm::kvstore::compress
