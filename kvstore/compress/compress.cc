#include "kvstore/compress/compress.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "kernels/compress.h"
#include "kvstore/compress/allocate.h"
#include "kvstore/compress/internal/every_token.h"
#include "kvstore/compress/internal/scorers.h"
#include "kvstore/compress/methods.h"

namespace kvcomm::kvstore::compress {
namespace {

Status CheckRequest(const CompressRequest& r) {
  KVCOMM_RETURN_IF_ERROR(r.layout.Validate());
  const uint64_t elements = uint64_t{r.layout.num_layers} * 2 * r.layout.ElementsPerHalf();
  if (r.kv.size() != elements)
    return InvalidArgument("KV has {} values, the layout {} needs {}", r.kv.size(),
                           r.layout.ToString(), elements);
  if (!r.queries.empty()) {
    if (r.q_heads <= 0 || r.q_heads % r.layout.kv_heads != 0 || r.window <= 0 ||
        (r.window > r.layout.tokens && !r.queries_follow) || r.window > KvLayout::kMaxTokens)
      return InvalidArgument(
          "queries: {} query heads (a multiple of {} kv heads) and a window of {} (1..{} "
          "tokens) do not fit",
          r.q_heads, r.layout.kv_heads, r.window, r.layout.tokens);
    if (r.queries.size() !=
        uint64_t(r.layout.num_layers) * r.q_heads * r.window * r.layout.head_dim)
      return InvalidArgument("queries have {} values, expected layers x q_heads x window x dim",
                             r.queries.size());
  }
  return Status();
}

// The per-(layer, head) average token count a budget asks for.
// The encoding's size for `kept` tokens in all: token-subset, or mixed (MiKV) when given.
uint64_t EncodedBytes(const KvLayout& layout, uint64_t kept,
                      const std::optional<MixedParams>& mixed) {
  return mixed ? MixedBytes(layout, kept, *mixed) : TokenSubsetBytes(layout, kept);
}

Result<int64_t> AverageTokens(const Budget& budget, const KvLayout& layout,
                              const std::optional<MixedParams>& mixed) {
  const int64_t tokens = layout.tokens;
  switch (budget.kind) {
    case Budget::Kind::kNone:
      return InvalidArgument("token selection needs a budget (tokens, a fraction or bytes)");
    case Budget::Kind::kLoss:  // resolved after scoring (CalibratedAverage); until then half,
      return std::max<int64_t>(1, tokens / 2);  // which is what Compactor's blend defaults see
    case Budget::Kind::kTokens:
      if (budget.value > tokens)
        return InvalidArgument("budget of {} tokens exceeds the segment's {}", budget.value,
                               tokens);
      return static_cast<int64_t>(budget.value);
    case Budget::Kind::kFraction:
      return std::max<int64_t>(1, std::llround(budget.value * tokens));
    case Budget::Kind::kBytes: {
      const uint64_t heads = uint64_t{layout.num_layers} * layout.kv_heads;
      const uint64_t fixed = EncodedBytes(layout, 0, mixed);
      const uint64_t per_token = EncodedBytes(layout, 1, mixed) - fixed;
      const uint64_t bytes = static_cast<uint64_t>(budget.value);
      const int64_t average =
          bytes < fixed ? 0 : static_cast<int64_t>((bytes - fixed) / per_token / heads);
      if (average < 1)
        return InvalidArgument("budget of {} bytes is below the smallest encoding ({} bytes)",
                               bytes, fixed + per_token * heads);
      return std::min<int64_t>(average, tokens);
    }
  }
  return InvalidArgument("bad budget");
}

// Scores +inf for what the method always keeps when a head keeps `kept` tokens: its sinks and
// its recent window, in each of the rows [row][tokens].
void ForceKept(const TokenScorer& scorer, int64_t kept, int64_t tokens, std::span<float> rows) {
  const int64_t sinks = scorer.sinks(), recent = scorer.recent(kept);
  for (size_t start = 0; start < rows.size(); start += tokens)
    for (int64_t t = 0; t < tokens; ++t)
      if (t < sinks || t >= tokens - recent)
        rows[start + t] = std::numeric_limits<float>::infinity();
}

// The calibrated budget: the fewest tokens per layer and head (at least `least`) for which the
// method's selection keeps all but `loss` of the attention the observation window's last
// (up to 32) queries give the segment, averaged over layers and heads.
Result<int64_t> CalibratedAverage(const CompressRequest& r, const TokenScorer& scorer,
                                  std::span<const float> all_scores, int64_t least, double loss) {
  if (r.queries.empty())
    return InvalidArgument(
        "a loss budget estimates the loss from the attention of the observation window: send "
        "its queries");
  const KvLayout& l = r.layout;
  const int64_t T = l.tokens, D = l.head_dim, H = l.kv_heads, W = std::min<int64_t>(32, r.window);
  std::vector<float> mass(all_scores.size()), storage;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    LayerView view;
    view.keys = r.kv.data() + uint64_t{layer} * 2 * H * T * D;
    view.queries = r.queries.data() + uint64_t{layer} * r.q_heads * r.window * D;
    view.q_heads = r.q_heads;
    view.window = r.window;
    kernels::cpu::ObservationScores(internal::LastQueries(l, view, W, storage), view.keys,
                                    r.q_heads, H, W, T, D, mass.data() + uint64_t{layer} * H * T,
                                    !r.queries_follow);
  }
  std::vector<float> row(T);
  std::vector<int32_t> kept;
  auto loss_at = [&](int64_t k) {
    double lost = 0;
    kept.resize(k);
    for (uint64_t head = 0; head < uint64_t{l.num_layers} * H; ++head) {
      std::copy_n(all_scores.data() + head * T, T, row.begin());
      ForceKept(scorer, k, T, row);
      kernels::cpu::TopKPerRow(row.data(), 1, T, k, kept.data());
      const float* m = mass.data() + head * T;
      double total = 0, held = 0;
      for (int64_t t = 0; t < T; ++t) total += m[t];
      for (int32_t t : kept) held += m[t];
      lost += total > 0 ? 1 - held / total : 0;
    }
    return lost / double(l.num_layers * H);
  };
  int64_t low = least, high = T;  // loss_at(T) is 0
  while (low < high) {
    const int64_t mid = (low + high) / 2;
    if (loss_at(mid) <= loss)
      high = mid;
    else
      low = mid + 1;
  }
  return low;
}

struct Duo {
  int64_t sinks = 4, recent = 64;
  std::optional<int64_t> retrieval_percent;  // else the budget decides
};

Result<Duo> ParseDuo(const MethodSpec& spec, const CompressRequest& r) {
  KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"sinks", "recent", "retrieval"}));
  Duo duo;
  KVCOMM_ASSIGN_OR_RETURN(duo.sinks, IntParam(spec, "sinks", 4, 0, 1 << 20));
  KVCOMM_ASSIGN_OR_RETURN(duo.recent, IntParam(spec, "recent", 64, 0, 1 << 20));
  if (spec.params.contains("retrieval")) {
    KVCOMM_ASSIGN_OR_RETURN(int64_t percent, IntParam(spec, "retrieval", 25, 0, 100));
    duo.retrieval_percent = percent;
  }
  const uint64_t heads = uint64_t{r.layout.num_layers} * r.layout.kv_heads;
  if (r.head_scores.size() != heads)
    return InvalidArgument(
        "method 'duo' needs a calibrated score per layer and kv head ({}), got {} (see "
        "compress_quality --calibrate-duo)",
        heads, r.head_scores.size());
  for (float score : r.head_scores)
    if (!std::isfinite(score)) return InvalidArgument("method 'duo': a head score is not finite");
  return duo;
}

// Retrieval heads: `retrieval=` percent of them, or as many as the token budget pays for.
Result<std::vector<uint32_t>> DuoCounts(const Duo& duo, const CompressRequest& r,
                                        const Budget& budget, int64_t average) {
  const int64_t T = r.layout.tokens, heads = int64_t{r.layout.num_layers} * r.layout.kv_heads;
  const int64_t streaming = std::min(T, duo.sinks + duo.recent);
  int64_t retrieval = 0;
  if (duo.retrieval_percent) {
    if (budget.kind != Budget::Kind::kNone)
      return InvalidArgument("method 'duo': give retrieval= or a budget, not both");
    retrieval = heads * *duo.retrieval_percent / 100;
  } else {
    if (average < streaming)
      return InvalidArgument(
          "budget of {} tokens per head is below the {} every streaming head keeps (sinks + "
          "recent)",
          average, streaming);
    retrieval = streaming == T ? heads : (average - streaming) * heads / (T - streaming);
  }
  return DuoHeadCounts(r.head_scores, std::min(retrieval, heads), T, streaming);
}

}  // namespace

Result<Compressed> Compress(const CompressRequest& r) {
  KVCOMM_RETURN_IF_ERROR(CheckRequest(r));
  KVCOMM_ASSIGN_OR_RETURN(auto spec, ParseMethodSpec(r.method));
  KVCOMM_ASSIGN_OR_RETURN(auto budget, ParseBudget(r.budget));
  KVCOMM_ASSIGN_OR_RETURN(auto every_token, internal::CompressEveryToken(r, spec, budget));
  if (every_token) return std::move(*every_token);
  std::optional<MixedParams> mixed;
  if (spec.name == "mikv") {
    KVCOMM_ASSIGN_OR_RETURN(auto parsed, internal::ParseMikv(spec, r.layout));
    mixed = parsed.first;
    spec = parsed.second;
  }
  std::optional<Duo> duo;
  if (spec.name == "duo") {
    KVCOMM_ASSIGN_OR_RETURN(duo, ParseDuo(spec, r));
    spec = {"streaming_llm", {{"sinks", std::to_string(duo->sinks)}}};
  }
  KVCOMM_ASSIGN_OR_RETURN(auto scorer, MakeScorer(spec));
  if (scorer->needs_queries() && r.queries.empty())
    return InvalidArgument("method '{}' is query-aware: send the observation window's queries",
                           spec.name);
  KVCOMM_ASSIGN_OR_RETURN(auto allocator_spec, ParseMethodSpec(r.allocator));
  KVCOMM_ASSIGN_OR_RETURN(auto allocator, ParseAllocator(allocator_spec));
  int64_t average = 0;
  if (duo && duo->retrieval_percent && budget.kind == Budget::Kind::kNone) {
    average = std::clamp<int64_t>(duo->sinks + duo->recent, 1, r.layout.tokens);  // unused
  } else {
    KVCOMM_ASSIGN_OR_RETURN(average, AverageTokens(budget, r.layout, mixed));
  }

  const KvLayout& l = r.layout;
  const int64_t T = l.tokens, D = l.head_dim, H = l.kv_heads;
  // The fewest tokens a layer can keep: what the method always keeps (a recent share of the
  // count itself never exceeds it).
  const int64_t least = std::clamp<int64_t>(scorer->sinks() + scorer->recent(0), 1, T);
  if (average < least && budget.kind != Budget::Kind::kLoss)
    return InvalidArgument(
        "budget leaves {} tokens per layer and head; method '{}' always keeps {} (sinks + "
        "recent)",
        average, spec.name, least);
  std::vector<uint32_t> duo_counts;
  if (duo) {
    KVCOMM_ASSIGN_OR_RETURN(duo_counts, DuoCounts(*duo, r, budget, average));
  }

  // Every layer is scored first: layer rules (LAVa) compare the layers' scores.
  auto view_of = [&](uint32_t layer) {
    const float* keys = r.kv.data() + uint64_t{layer} * 2 * H * T * D;
    return LayerView{
        keys,
        keys + H * T * D,
        r.queries.empty() ? nullptr : r.queries.data() + uint64_t{layer} * r.q_heads * r.window * D,
        r.q_heads,
        r.window,
        r.queries_follow,
        r.inv_freq,
        r.first_position,
        static_cast<double>(average) / T};
  };
  std::vector<float> all_scores(uint64_t{l.num_layers} * H * T);
  for (uint32_t layer = 0; layer < l.num_layers; ++layer)
    KVCOMM_RETURN_IF_ERROR(scorer->Score(
        l, view_of(layer), std::span<float>(all_scores).subspan(uint64_t{layer} * H * T, H * T)));
  if (budget.kind == Budget::Kind::kLoss) {
    KVCOMM_ASSIGN_OR_RETURN(average,
                            CalibratedAverage(r, *scorer, all_scores, least, budget.value));
  }
  KVCOMM_ASSIGN_OR_RETURN(auto per_layer,
                          AllocateLayers(allocator, l, average, least,
                                         {r.kv, r.queries, r.q_heads, r.window, all_scores}));

  TokenSubset subset{l, {}, {}, {}, {}};
  std::vector<float> key_rows, value_rows;
  std::vector<int32_t> kept;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    const LayerView view = view_of(layer);
    std::span<float> scores(all_scores.data() + uint64_t{layer} * H * T, H * T);
    const int64_t layer_count = per_layer[layer];
    ForceKept(*scorer, layer_count, T, scores);
    std::vector<uint32_t> counts(H, static_cast<uint32_t>(layer_count));
    if (duo) {
      counts.assign(duo_counts.begin() + layer * H, duo_counts.begin() + (layer + 1) * H);
    } else if (allocator.adaptive_heads) {
      KVCOMM_ASSIGN_OR_RETURN(
          counts,
          AllocateHeads(scores, H, T, layer_count * H, allocator.floor_percent * layer_count / 100,
                        allocator.layers != AllocatorSpec::Layers::kLava));
    }
    KVCOMM_RETURN_IF_ERROR(scorer->Refine(l, view, counts, scores));
    // Per head: indices, then its K rows and V rows as the codec writes them.
    for (int64_t h = 0; h < H; ++h) {
      const int64_t k = counts[h];
      kept.resize(k);
      kernels::cpu::TopKPerRow(scores.data() + h * T, 1, T, k, kept.data());
      subset.indices.insert(subset.indices.end(), kept.begin(), kept.end());
      key_rows.resize(k * D);
      value_rows.resize(k * D);
      kernels::cpu::GatherRows(view.keys + h * T * D, 1, T, D, kept.data(), k, key_rows.data());
      kernels::cpu::GatherRows(view.values + h * T * D, 1, T, D, kept.data(), k, value_rows.data());
      scorer->MergeEvicted(l, view, h, kept, key_rows, value_rows);
      subset.keys.insert(subset.keys.end(), key_rows.begin(), key_rows.end());
      subset.values.insert(subset.values.end(), value_rows.begin(), value_rows.end());
    }
    subset.counts.insert(subset.counts.end(), counts.begin(), counts.end());
  }
  auto counts = subset.counts;
  if (mixed)
    return Compressed{CompressedCodec::kMixed,
                      EncodeMixed(l, r.kv, subset.counts, subset.indices, *mixed),
                      std::move(counts)};
  return Compressed{CompressedCodec::kTokenSubset, EncodeTokenSubset(subset), std::move(counts)};
}

}  // namespace kvcomm::kvstore::compress
