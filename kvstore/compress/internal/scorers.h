// The token scorers behind MakeScorer (methods.h), one factory per method; each checks its own
// parameters. Split over methods.cc (attention and key statistics) and
// value_aware_methods.cc (methods that also read the values or the output).
#pragma once

#include <memory>

#include "kvstore/compress/methods.h"

namespace kvcomm::kvstore::compress::internal {

using ScorerResult = Result<std::unique_ptr<TokenScorer>>;

ScorerResult MakeCurDkv(const MethodSpec& spec);
ScorerResult MakeObCache(const MethodSpec& spec);
ScorerResult MakeCompactor(const MethodSpec& spec);
ScorerResult MakeKvCrush(const MethodSpec& spec);

// Leverage scores of the layer's centred pre-RoPE keys, Gaussian-sketched to `sketch` columns
// (0: none), into scores[kv_head][token]; refuses a view without the RoPE frequencies.
Status PreRopeLeverage(const KvLayout& layout, const LayerView& layer, int64_t sketch,
                       std::string_view method, std::span<float> scores);

// The attention of the layer's last `window` queries (of those sent) to each token, per kv head.
// Refuses a view without `window` queries, or a window longer than the segment.
Status NeedWindow(const KvLayout& layout, const LayerView& layer, int64_t window,
                  std::string_view method);
// The last `window` of the view's queries ([q_head][window][dim]), copied into `storage` when
// the view holds more.
const float* LastQueries(const KvLayout& layout, const LayerView& layer, int64_t window,
                         std::vector<float>& storage);
void WindowScores(const KvLayout& layout, const LayerView& layer, int64_t window, float* out);

}  // namespace kvcomm::kvstore::compress::internal
