#include "kvstore/compress/compress.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/compress.h"
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
        r.window > r.layout.tokens)
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
Result<int64_t> AverageTokens(const Budget& budget, const KvLayout& layout) {
  const int64_t tokens = layout.tokens;
  switch (budget.kind) {
    case Budget::Kind::kNone:
      return InvalidArgument("token selection needs a budget (tokens, a fraction or bytes)");
    case Budget::Kind::kTokens:
      if (budget.value > tokens)
        return InvalidArgument("budget of {} tokens exceeds the segment's {}", budget.value,
                               tokens);
      return static_cast<int64_t>(budget.value);
    case Budget::Kind::kFraction:
      return std::max<int64_t>(1, std::llround(budget.value * tokens));
    case Budget::Kind::kBytes: {
      const uint64_t heads = uint64_t{layout.num_layers} * layout.kv_heads;
      const uint64_t fixed = TokenSubsetBytes(layout, 0);
      const uint64_t per_token = TokenSubsetBytes(layout, 1) - fixed;
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

Result<Compressed> CompressKivi(const CompressRequest& r, const MethodSpec& spec,
                                const Budget& budget) {
  KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"bits", "group", "residual"}));
  KiviParams p;
  KVCOMM_ASSIGN_OR_RETURN(int64_t bits, IntParam(spec, "bits", 2, 2, 8));
  if (bits != 2 && bits != 4 && bits != 8)
    return InvalidArgument("method 'kivi': bits={} must be 2, 4 or 8", bits);
  p.bits = static_cast<int>(bits);
  KVCOMM_ASSIGN_OR_RETURN(p.group, IntParam(spec, "group", 32, 4, 4096));
  KVCOMM_ASSIGN_OR_RETURN(p.residual, IntParam(spec, "residual", 128, 0, KvLayout::kMaxTokens));
  if (r.layout.head_dim % p.group != 0 || p.group * p.bits % 8 != 0)
    return InvalidArgument("method 'kivi': group={} must divide head_dim {} (and whole bytes)",
                           p.group, r.layout.head_dim);
  const uint64_t bytes = KiviBytes(r.layout, p);
  if (budget.kind == Budget::Kind::kTokens || budget.kind == Budget::Kind::kFraction)
    return InvalidArgument("method 'kivi' keeps every token: give a byte budget or none");
  if (budget.kind == Budget::Kind::kBytes && bytes > budget.value)
    return InvalidArgument("method 'kivi' with bits={} needs {} bytes; the budget is {}", p.bits,
                           bytes, static_cast<uint64_t>(budget.value));
  return Compressed{CompressedCodec::kKivi, EncodeKivi(r.layout, r.kv, p), {}};
}

}  // namespace

Result<std::vector<uint32_t>> Allocate(const MethodSpec& allocator, const KvLayout& layout,
                                       int64_t average) {
  const int64_t layers = layout.num_layers, tokens = layout.tokens;
  std::vector<int64_t> per_layer(layers, average);
  if (allocator.name == "pyramid") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(allocator, {"beta"}));
    KVCOMM_ASSIGN_OR_RETURN(int64_t beta, IntParam(allocator, "beta", 20, 1, 1000));
    // PyramidKV: the top layer keeps average / beta, the bottom 2 * average - that, linearly in
    // between (capped by the segment; what a cap cuts goes to the layers below it).
    const double low = std::max(1.0, static_cast<double>(average) / beta);
    const double high = 2.0 * average - low;
    int64_t total = 0;
    for (int64_t l = 0; l < layers; ++l) {
      const double share = layers > 1 ? high - (high - low) * l / (layers - 1) : average;
      per_layer[l] = std::clamp<int64_t>(std::llround(share), 1, tokens);
      total += per_layer[l];
    }
    for (int64_t l = 0, missing = average * layers - total; missing != 0; l = (l + 1) % layers) {
      const int64_t step = missing > 0 ? 1 : -1;
      if (per_layer[l] + step >= 1 && per_layer[l] + step <= tokens) {
        per_layer[l] += step;
        missing -= step;
      }
    }
  } else if (allocator.name == "uniform") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(allocator, {}));
  } else {
    return InvalidArgument("unknown allocator '{}' (uniform or pyramid)", allocator.name);
  }
  std::vector<uint32_t> counts;
  for (int64_t l = 0; l < layers; ++l)
    counts.insert(counts.end(), layout.kv_heads, static_cast<uint32_t>(per_layer[l]));
  return counts;
}

Result<Compressed> Compress(const CompressRequest& r) {
  KVCOMM_RETURN_IF_ERROR(CheckRequest(r));
  KVCOMM_ASSIGN_OR_RETURN(auto spec, ParseMethodSpec(r.method));
  KVCOMM_ASSIGN_OR_RETURN(auto budget, ParseBudget(r.budget));
  if (spec.name == "kivi") return CompressKivi(r, spec, budget);
  KVCOMM_ASSIGN_OR_RETURN(auto scorer, MakeScorer(spec));
  if (scorer->needs_queries() && r.queries.empty())
    return InvalidArgument("method '{}' is query-aware: send the observation window's queries",
                           spec.name);
  KVCOMM_ASSIGN_OR_RETURN(auto allocator, ParseMethodSpec(r.allocator));
  KVCOMM_ASSIGN_OR_RETURN(int64_t average, AverageTokens(budget, r.layout));
  KVCOMM_ASSIGN_OR_RETURN(auto counts, Allocate(allocator, r.layout, average));
  for (uint32_t kept : counts) {
    const int64_t forced =
        std::min<int64_t>(scorer->sinks() + scorer->recent(kept), r.layout.tokens);
    if (kept < forced)
      return InvalidArgument(
          "budget leaves {} tokens in some layer; method '{}' always keeps {} (sinks + recent)",
          kept, spec.name, forced);
  }

  const KvLayout& l = r.layout;
  const int64_t T = l.tokens, D = l.head_dim, H = l.kv_heads;
  TokenSubset subset{l, counts, {}, {}, {}};
  std::vector<float> scores(H * T);
  std::vector<int32_t> kept;
  std::vector<float> rows;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    const float* keys = r.kv.data() + uint64_t{layer} * 2 * H * T * D;
    LayerView view{
        keys,
        keys + H * T * D,
        r.queries.empty() ? nullptr : r.queries.data() + uint64_t{layer} * r.q_heads * r.window * D,
        r.q_heads,
        r.window,
        r.inv_freq,
        r.first_position};
    KVCOMM_RETURN_IF_ERROR(scorer->Score(l, view, scores));
    const int64_t k = counts[layer * H];  // every head of a layer keeps the same count
    const int64_t recent = scorer->recent(k);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t)
        if (t < scorer->sinks() || t >= T - recent)
          scores[h * T + t] = std::numeric_limits<float>::infinity();
    kept.resize(H * k);
    kernels::cpu::TopKPerRow(scores.data(), H, T, k, kept.data());
    subset.indices.insert(subset.indices.end(), kept.begin(), kept.end());
    rows.resize(H * k * D);
    for (const float* half : {view.keys, view.values}) {
      kernels::cpu::GatherRows(half, H, T, D, kept.data(), k, rows.data());
      // Per head: K rows then V rows, as the codec writes them.
      auto& out = half == view.keys ? subset.keys : subset.values;
      out.insert(out.end(), rows.begin(), rows.end());
    }
  }
  return Compressed{CompressedCodec::kTokenSubset, EncodeTokenSubset(subset), std::move(counts)};
}

}  // namespace kvcomm::kvstore::compress
