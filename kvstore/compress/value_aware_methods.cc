// Token scorers that read more than the keys' attention: the values (CurDKV), the attention
// output (OBCache), every query of the prompt (Compactor), or the selection itself (KVCrush).
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "kernels/compress.h"
#include "kvstore/compress/internal/scorers.h"

namespace kvcomm::kvstore::compress::internal {
namespace {

// Squared norms of rows [rows][dim], after a seeded Gaussian projection to `sketch` columns
// (0: none) as CurDKV's randomized leverage does.
void SquaredNorms(const float* x, int64_t rows, int64_t dim, int64_t sketch, double* out) {
  std::vector<float> gaussian;
  if (sketch > 0) {
    gaussian.resize(dim * sketch);
    std::mt19937 rng(20250918);
    std::normal_distribution<float> normal(0.f, 1.f / std::sqrt(static_cast<float>(sketch)));
    for (auto& v : gaussian) v = normal(rng);
  }
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    if (sketch == 0) {
      for (int64_t d = 0; d < dim; ++d) sum += double{x[r * dim + d]} * x[r * dim + d];
    } else {
      for (int64_t j = 0; j < sketch; ++j) {
        double p = 0;
        for (int64_t d = 0; d < dim; ++d) p += double{x[r * dim + d]} * gaussian[d * sketch + j];
        sum += p * p;
      }
    }
    out[r] = sum;
  }
}

// Each block of `window` consecutive values divided by the block's sum.
void NormaliseLocally(std::vector<double>& x, int64_t window) {
  for (size_t start = 0; start < x.size(); start += window) {
    const size_t end = std::min(x.size(), start + window);
    double sum = 0;
    for (size_t i = start; i < end; ++i) sum += x[i];
    if (sum > 0)
      for (size_t i = start; i < end; ++i) x[i] /= sum;
  }
}

// CurDKV (Sengupta et al. 2025): the squared row norms of K and V approximate their CUR leverage
// scores; values matter as much as keys for the attention output, so both are combined.
class CurDkv final : public TokenScorer {
 public:
  enum class Combine { kProduct, kKey, kValue, kMean };
  CurDkv(int64_t sinks, int64_t window, Combine combine, int64_t sketch)
      : sinks_(sinks), window_(window), combine_(combine), sketch_(sketch) {}
  Status Score(const KvLayout& layout, const LayerView& layer,
               std::span<float> scores) const override {
    const int64_t T = layout.tokens, D = layout.head_dim;
    std::vector<double> k2(T), v2(T);
    for (int64_t h = 0; h < layout.kv_heads; ++h) {
      SquaredNorms(layer.keys + h * T * D, T, D, sketch_, k2.data());
      SquaredNorms(layer.values + h * T * D, T, D, sketch_, v2.data());
      NormaliseLocally(k2, window_);
      NormaliseLocally(v2, window_);
      double total = 0;
      for (int64_t t = 0; t < T; ++t) {
        switch (combine_) {
          case Combine::kProduct:
            k2[t] *= v2[t];
            break;
          case Combine::kKey:
            break;
          case Combine::kValue:
            k2[t] = v2[t];
            break;
          case Combine::kMean:
            k2[t] = (k2[t] + v2[t]) / 2;
            break;
        }
        total += k2[t];
      }
      for (int64_t t = 0; t < T; ++t)
        scores[h * T + t] = static_cast<float>(total > 0 ? k2[t] / total : 0.0);
    }
    return Status();
  }
  int64_t sinks() const override { return sinks_; }

 private:
  int64_t sinks_, window_;
  Combine combine_;
  int64_t sketch_;
};

// OBCache (Gu et al. 2025): Optimal-Brain-Damage saliency of each token, the perturbation of
// the window queries' attention outputs that pruning its key, value or both would cause.
class ObCache final : public TokenScorer {
 public:
  ObCache(int64_t window, kernels::cpu::SaliencyTarget target) : window_(window), target_(target) {}
  Status Score(const KvLayout& layout, const LayerView& layer,
               std::span<float> scores) const override {
    KVCOMM_RETURN_IF_ERROR(NeedWindow(layout, layer, window_, "obcache"));
    std::vector<float> storage;
    kernels::cpu::OutputSaliency(LastQueries(layout, layer, window_, storage), layer.keys,
                                 layer.values, layer.q_heads, layout.kv_heads, window_,
                                 layout.tokens, layout.head_dim, target_, scores.data());
    return Status();
  }
  int64_t recent(int64_t) const override { return window_; }
  bool needs_queries() const override { return true; }

 private:
  int64_t window_;
  kernels::cpu::SaliencyTarget target_;
};

// x := (x - mean) / std over all of x (std floored as Compactor does).
void ZScore(std::span<float> x) {
  double mean = 0, square = 0;
  for (float v : x) mean += v;
  mean /= static_cast<double>(x.size());
  for (float v : x) square += (v - mean) * (v - mean);
  const double sd = std::max(std::sqrt(square / std::max<size_t>(1, x.size() - 1)), 1e-6);
  for (float& v : x) v = static_cast<float>((v - mean) / sd);
}

// Compactor (Chari & Van Durme 2025): a query-agnostic geometric score (leverage of the
// pre-RoPE keys) blended with non-causal chunked attention weighted by the value norm.
class Compactor final : public TokenScorer {
 public:
  Compactor(int64_t sketch, int64_t chunk, double blend)
      : sketch_(sketch), chunk_(chunk), blend_(blend) {}
  Status Score(const KvLayout& layout, const LayerView& layer,
               std::span<float> scores) const override {
    const int64_t H = layout.kv_heads, T = layout.tokens, D = layout.head_dim;
    if (layer.queries == nullptr || layer.window != T)
      return InvalidArgument("method 'compactor' needs the queries of every token ({}), got {}", T,
                             layer.queries ? layer.window : 0);
    std::vector<float> leverage(H * T), attention(H * T);
    KVCOMM_RETURN_IF_ERROR(PreRopeLeverage(layout, layer, sketch_, "compactor", leverage));
    kernels::cpu::ChunkedAttentionScores(layer.queries, layer.keys, layer.q_heads, H, T, D, chunk_,
                                         attention.data());
    for (int64_t r = 0; r < H * T; ++r) {
      double norm = 0;
      for (int64_t d = 0; d < D; ++d)
        norm += double{layer.values[r * D + d]} * layer.values[r * D + d];
      attention[r] *= static_cast<float>(std::sqrt(norm));
    }
    kernels::cpu::Pool1D(attention.data(), H, T, 3, kernels::cpu::PoolKind::kMean, scores.data());
    ZScore(scores);
    ZScore(leverage);
    const double blend = blend_ >= 0 ? blend_ : 1.0 - layer.keep_fraction;
    for (int64_t r = 0; r < H * T; ++r) scores[r] += static_cast<float>(blend * leverage[r]);
    return Status();
  }
  int64_t sinks() const override { return 8; }
  int64_t recent(int64_t) const override { return 4; }
  bool needs_queries() const override { return true; }

 private:
  int64_t sketch_, chunk_;
  double blend_;  // < 0: the compression ratio
};

// KVCrush (Jha et al. 2025): most of each head's count goes to the tokens the window attends to;
// the rest keeps one representative per group of the tokens that would be dropped, grouped by
// how their binary signature (does head h attend to the token above its mean?) differs from an
// anchor signature, so every kind of dropped token leaves a trace.
class KvCrush final : public TokenScorer {
 public:
  KvCrush(int64_t window, int64_t share, bool alternate_anchor)
      : window_(window), share_(share), alternate_anchor_(alternate_anchor) {}
  Status Score(const KvLayout& layout, const LayerView& layer,
               std::span<float> scores) const override {
    KVCOMM_RETURN_IF_ERROR(NeedWindow(layout, layer, window_, "kvcrush"));
    WindowScores(layout, layer, window_, scores.data());
    return Status();
  }
  int64_t recent(int64_t) const override { return window_; }
  bool needs_queries() const override { return true; }

  Status Refine(const KvLayout& layout, const LayerView&, std::span<const uint32_t> kept,
                std::span<float> scores) const override {
    const int64_t H = layout.kv_heads, T = layout.tokens;
    int64_t representatives = std::numeric_limits<int64_t>::max();
    std::vector<double> mean(H, 0.0);
    for (int64_t h = 0; h < H; ++h) {
      int64_t forced = 0, finite = 0;
      for (int64_t t = 0; t < T; ++t) {
        const float s = scores[h * T + t];
        if (std::isinf(s)) {
          ++forced;
        } else {
          mean[h] += s;
          ++finite;
        }
      }
      if (finite > 0) mean[h] /= finite;
      representatives =
          std::min({representatives, share_ * int64_t{kept[h]} / 100, int64_t{kept[h]} - forced});
    }
    if (representatives <= 0) return Status();
    // What each head keeps without representatives; the rest would be dropped by all heads.
    std::vector<bool> chosen(T, false);
    std::vector<int32_t> top;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t k = kept[h] - representatives;
      top.resize(k);
      kernels::cpu::TopKPerRow(scores.data() + h * T, 1, T, k, top.data());
      for (int32_t t : top) chosen[t] = true;
    }
    std::vector<int32_t> dropped;
    for (int32_t t = 0; t < T; ++t)
      if (!chosen[t]) dropped.push_back(t);
    if (dropped.empty()) return Status();
    std::vector<int> anchor(H);
    for (int64_t h = 0; h < H; ++h) {
      if (alternate_anchor_) {
        anchor[h] = h % 2 == 0;
      } else {  // the dropped tokens' majority bit
        int64_t ones = 0;
        for (int32_t t : dropped) ones += scores[h * T + t] > mean[h];
        anchor[h] = 2 * ones >= static_cast<int64_t>(dropped.size());
      }
    }
    std::vector<std::pair<int, int32_t>> by_distance;  // (Hamming distance, token)
    for (int32_t t : dropped) {
      int distance = 0;
      for (int64_t h = 0; h < H; ++h) distance += (scores[h * T + t] > mean[h]) != anchor[h];
      by_distance.emplace_back(distance, t);
    }
    std::sort(by_distance.begin(), by_distance.end());
    const int64_t n = static_cast<int64_t>(by_distance.size());
    const int64_t groups = std::min(representatives, n);
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t begin = g * n / groups, end = (g + 1) * n / groups;
      const int32_t t = by_distance[(begin + end - 1) / 2].second;
      for (int64_t h = 0; h < H; ++h) scores[h * T + t] = std::numeric_limits<float>::max();
    }
    return Status();
  }

 private:
  int64_t window_, share_;
  bool alternate_anchor_;
};

}  // namespace

ScorerResult MakeCurDkv(const MethodSpec& spec) {
  KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"sinks", "window", "combine", "sketch"}));
  KVCOMM_ASSIGN_OR_RETURN(int64_t sinks, IntParam(spec, "sinks", 4, 0, 1 << 20));
  KVCOMM_ASSIGN_OR_RETURN(int64_t window, IntParam(spec, "window", 16, 1, 1 << 20));
  KVCOMM_ASSIGN_OR_RETURN(
      auto combine, ChoiceParam(spec, "combine", "product", {"product", "key", "value", "mean"}));
  KVCOMM_ASSIGN_OR_RETURN(int64_t sketch, IntParam(spec, "sketch", 0, 0, 4096));
  const auto kind = combine == "product" ? CurDkv::Combine::kProduct
                    : combine == "key"   ? CurDkv::Combine::kKey
                    : combine == "value" ? CurDkv::Combine::kValue
                                         : CurDkv::Combine::kMean;
  return std::unique_ptr<TokenScorer>(new CurDkv(sinks, window, kind, sketch));
}

ScorerResult MakeObCache(const MethodSpec& spec) {
  KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"window", "target"}));
  KVCOMM_ASSIGN_OR_RETURN(int64_t window, IntParam(spec, "window", 32, 1, 4096));
  KVCOMM_ASSIGN_OR_RETURN(auto target,
                          ChoiceParam(spec, "target", "joint", {"joint", "value", "key"}));
  using kernels::cpu::SaliencyTarget;
  return std::unique_ptr<TokenScorer>(new ObCache(window, target == "joint" ? SaliencyTarget::kJoint
                                                          : target == "value"
                                                              ? SaliencyTarget::kValue
                                                              : SaliencyTarget::kKey));
}

ScorerResult MakeCompactor(const MethodSpec& spec) {
  KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"sketch", "chunk", "blend"}));
  KVCOMM_ASSIGN_OR_RETURN(int64_t sketch, IntParam(spec, "sketch", 48, 0, 4096));
  KVCOMM_ASSIGN_OR_RETURN(int64_t chunk, IntParam(spec, "chunk", 256, 1, 1 << 20));
  KVCOMM_ASSIGN_OR_RETURN(double blend, NumberParam(spec, "blend", -1, 0, 100));
  return std::unique_ptr<TokenScorer>(new Compactor(sketch, chunk, blend));
}

ScorerResult MakeKvCrush(const MethodSpec& spec) {
  KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"window", "share", "anchor"}));
  KVCOMM_ASSIGN_OR_RETURN(int64_t window, IntParam(spec, "window", 32, 1, 4096));
  KVCOMM_ASSIGN_OR_RETURN(int64_t share, IntParam(spec, "share", 10, 0, 100));
  KVCOMM_ASSIGN_OR_RETURN(auto anchor, ChoiceParam(spec, "anchor", "mean", {"mean", "alternate"}));
  return std::unique_ptr<TokenScorer>(new KvCrush(window, share, anchor == "alternate"));
}

}  // namespace kvcomm::kvstore::compress::internal
