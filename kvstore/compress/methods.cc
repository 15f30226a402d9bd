#include "kvstore/compress/methods.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/compress.h"
#include "kernels/realign.h"
#include "kvstore/compress/internal/scorers.h"

namespace kvcomm::kvstore::compress {
namespace {

// StreamingLLM (Xiao et al. 2023): attention sinks plus the most recent tokens.
class StreamingLlm final : public TokenScorer {
 public:
  explicit StreamingLlm(int64_t sinks) : sinks_(sinks) {}
  Status Score(const KvLayout& layout, const LayerView&, std::span<float> scores) const override {
    for (uint32_t h = 0; h < layout.kv_heads; ++h)
      for (uint32_t t = 0; t < layout.tokens; ++t)
        scores[h * layout.tokens + t] = static_cast<float>(t);  // later is better
    return Status();
  }
  int64_t sinks() const override { return sinks_; }

 private:
  int64_t sinks_;
};

// Key-norm (Devoto et al. 2024): keys with a low L2 norm draw the most attention; keep those.
class KeyNorm final : public TokenScorer {
 public:
  KeyNorm(int64_t sinks, int64_t recent) : sinks_(sinks), recent_(recent) {}
  Status Score(const KvLayout& layout, const LayerView& layer,
               std::span<float> scores) const override {
    const int64_t rows = int64_t{layout.kv_heads} * layout.tokens;
    for (int64_t r = 0; r < rows; ++r) {
      double norm = 0;
      for (uint32_t d = 0; d < layout.head_dim; ++d)
        norm += double{layer.keys[r * layout.head_dim + d]} * layer.keys[r * layout.head_dim + d];
      scores[r] = -static_cast<float>(std::sqrt(norm));
    }
    return Status();
  }
  int64_t sinks() const override { return sinks_; }
  int64_t recent(int64_t) const override { return recent_; }

 private:
  int64_t sinks_, recent_;
};

}  // namespace

namespace internal {

Status NeedWindow(const KvLayout& layout, const LayerView& layer, int64_t window,
                  std::string_view method) {
  if (layer.queries == nullptr || layer.window < window)
    return InvalidArgument("method '{}' needs the last {} queries of every layer (got {})", method,
                           window, layer.queries ? layer.window : 0);
  if (window > layout.tokens)
    return InvalidArgument("{}: window {} is longer than the segment ({} tokens)", method, window,
                           layout.tokens);
  return Status();
}

const float* LastQueries(const KvLayout& layout, const LayerView& layer, int64_t window,
                         std::vector<float>& storage) {
  const int64_t skip = layer.window - window;
  if (skip == 0) return layer.queries;
  storage.resize(layer.q_heads * window * layout.head_dim);
  for (int64_t h = 0; h < layer.q_heads; ++h)
    std::copy_n(layer.queries + (h * layer.window + skip) * layout.head_dim,
                window * layout.head_dim, storage.data() + h * window * layout.head_dim);
  return storage.data();
}

void WindowScores(const KvLayout& layout, const LayerView& layer, int64_t window, float* out) {
  std::vector<float> storage;
  kernels::cpu::ObservationScores(LastQueries(layout, layer, window, storage), layer.keys,
                                  layer.q_heads, layout.kv_heads, window, layout.tokens,
                                  layout.head_dim, out);
}

Status PreRopeLeverage(const KvLayout& layout, const LayerView& layer, int64_t sketch,
                       std::string_view method, std::span<float> scores) {
  const int64_t H = layout.kv_heads, T = layout.tokens, D = layout.head_dim;
  if (layer.inv_freq.size() != static_cast<size_t>(D / 2))
    return InvalidArgument(
        "method '{}' scores pre-RoPE keys: give the RoPE inverse frequencies ({} of them) and "
        "the segment's first position",
        method, D / 2);
  // Un-rotate: realign both halves of the layer to position 0 (values pass unchanged).
  std::vector<float> plain(2 * H * T * D);
  std::vector<int32_t> from(T), to(T, 0);
  for (int64_t t = 0; t < T; ++t) from[t] = layer.first_position + static_cast<int32_t>(t);
  kernels::cpu::RealignKv({1, H, T, D, 0}, layer.keys, from, to, layer.inv_freq, nullptr, nullptr,
                          nullptr, plain.data());
  const int64_t k = sketch > 0 ? sketch : D;
  std::vector<float> gaussian(D * k), x(T * k);
  std::mt19937 rng(20250710);
  std::normal_distribution<float> normal(0.f, 1.f / std::sqrt(static_cast<float>(k)));
  for (auto& v : gaussian) v = normal(rng);
  std::vector<double> mean(D);
  for (int64_t h = 0; h < H; ++h) {
    const float* keys = plain.data() + h * T * D;
    std::fill(mean.begin(), mean.end(), 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < D; ++d) mean[d] += keys[t * D + d] / static_cast<double>(T);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < k; ++j) {
        double sum = 0;
        for (int64_t d = 0; d < D; ++d)
          sum += (keys[t * D + d] - mean[d]) * (sketch > 0 ? gaussian[d * k + j] : (d == j));
        x[t * k + j] = static_cast<float>(sum);
      }
    kernels::cpu::LeverageScores(x.data(), T, k, scores.data() + h * T);
  }
  return Status();
}

}  // namespace internal

namespace {

using internal::NeedWindow;
using internal::WindowScores;

// SnapKV (Li et al. 2024): the observation window's attention to each token, pooled along
// tokens so kept tokens bring their neighbours; the window itself is always kept.
class SnapKv : public TokenScorer {
 public:
  SnapKv(std::string name, int64_t window, int64_t kernel, kernels::cpu::PoolKind pool)
      : name_(std::move(name)), window_(window), kernel_(kernel), pool_(pool) {}
  Status Score(const KvLayout& layout, const LayerView& layer,
               std::span<float> scores) const override {
    KVCOMM_RETURN_IF_ERROR(NeedWindow(layout, layer, window_, name_));
    std::vector<float> raw(scores.size());
    WindowScores(layout, layer, window_, raw.data());
    kernels::cpu::Pool1D(raw.data(), layout.kv_heads, layout.tokens, kernel_, pool_, scores.data());
    return Status();
  }
  int64_t recent(int64_t) const override { return window_; }
  bool needs_queries() const override { return true; }

 private:
  std::string name_;
  int64_t window_, kernel_;
  kernels::cpu::PoolKind pool_;
};

// LAVa (Shen et al. 2025): SnapKV's pooled window attention weighted per kv head by the
// largest L1 norm of its values (outside the window), so entries compare across heads and
// layers by what they add to the residual stream; pair with allocator 'lava'.
class Lava final : public SnapKv {
 public:
  using SnapKv::SnapKv;
  Status Score(const KvLayout& layout, const LayerView& layer,
               std::span<float> scores) const override {
    KVCOMM_RETURN_IF_ERROR(SnapKv::Score(layout, layer, scores));
    const int64_t T = layout.tokens, D = layout.head_dim;
    for (int64_t h = 0; h < layout.kv_heads; ++h) {
      double weight = 0;
      for (int64_t t = 0; t < T - recent(0); ++t) {
        double l1 = 0;
        for (int64_t d = 0; d < D; ++d) l1 += std::abs(layer.values[(h * T + t) * D + d]);
        weight = std::max(weight, l1);
      }
      for (int64_t t = 0; t < T; ++t) scores[h * T + t] *= static_cast<float>(weight);
    }
    return Status();
  }
};

// LAQ (lookahead queries): the attention that the queries of a short draft reply, generated by
// the agent over a cheaply compressed cache, give each token (they follow the segment: every
// token is visible), pooled like SnapKV; the prompt's last tokens are kept.
class Laq final : public TokenScorer {
 public:
  Laq(int64_t kernel, int64_t recent) : kernel_(kernel), recent_(recent) {}
  Status Score(const KvLayout& layout, const LayerView& layer,
               std::span<float> scores) const override {
    if (layer.queries == nullptr || !layer.queries_follow)
      return InvalidArgument(
          "method 'laq' scores with the queries of a look-ahead draft: send them as queries "
          "that follow the segment");
    std::vector<float> raw(scores.size());
    kernels::cpu::ObservationScores(layer.queries, layer.keys, layer.q_heads, layout.kv_heads,
                                    layer.window, layout.tokens, layout.head_dim, raw.data(),
                                    /*causal=*/false);
    kernels::cpu::Pool1D(raw.data(), layout.kv_heads, layout.tokens, kernel_,
                         kernels::cpu::PoolKind::kMax, scores.data());
    return Status();
  }
  int64_t recent(int64_t) const override { return recent_; }
  bool needs_queries() const override { return true; }

 private:
  int64_t kernel_, recent_;
};

// TOVA (Oren et al. 2024): keep the tokens the last query attends to most (here per kv head,
// the group's query heads summed).
class Tova final : public TokenScorer {
 public:
  Status Score(const KvLayout& layout, const LayerView& layer,
               std::span<float> scores) const override {
    KVCOMM_RETURN_IF_ERROR(NeedWindow(layout, layer, 1, "tova"));
    WindowScores(layout, layer, 1, scores.data());
    return Status();
  }
  int64_t recent(int64_t) const override { return 1; }
  bool needs_queries() const override { return true; }
};

// H2O (Zhang et al. 2023): heavy hitters by the attention every query of the prompt gave each
// token (the agent sends all its queries), plus a recent window taking a share of the budget.
class H2o : public TokenScorer {
 public:
  H2o(std::string name, double recent_share)
      : name_(std::move(name)), recent_share_(recent_share) {}
  Status Score(const KvLayout& layout, const LayerView& layer,
               std::span<float> scores) const override {
    if (layer.queries == nullptr || layer.window != layout.tokens)
      return InvalidArgument("method '{}' needs the queries of every token ({}), got {}", name_,
                             layout.tokens, layer.queries ? layer.window : 0);
    WindowScores(layout, layer, layer.window, scores.data());
    return Status();
  }
  int64_t recent(int64_t kept) const override {
    return static_cast<int64_t>(recent_share_ * static_cast<double>(kept));
  }
  bool needs_queries() const override { return true; }

 private:
  std::string name_;
  double recent_share_;
};

// D2O (Wan et al. 2024): H2O's selection, then every evicted token whose key is close enough
// (cosine similarity >= threshold; by default the mean of the evicted tokens' best
// similarities) to its most similar kept key is merged into that kept token:
//   x_c' = (e x_c + sum_e exp(u_ec) x_e) / (e + sum_e exp(u_ec))   for keys and values.
class D2o final : public H2o {
 public:
  D2o(double recent_share, double threshold) : H2o("d2o", recent_share), threshold_(threshold) {}
  void MergeEvicted(const KvLayout& layout, const LayerView& layer, int64_t head,
                    std::span<const int32_t> kept, std::span<float> keys,
                    std::span<float> values) const override {
    const int64_t T = layout.tokens, D = layout.head_dim, k = static_cast<int64_t>(kept.size());
    if (k == 0 || k == T) return;
    auto norm = [D](const float* x) {
      double s = 0;
      for (int64_t d = 0; d < D; ++d) s += double{x[d]} * x[d];
      return std::sqrt(s) + 1e-30;
    };
    std::vector<double> kept_norm(k);
    for (int64_t j = 0; j < k; ++j) kept_norm[j] = norm(keys.data() + j * D);
    struct Match {
      int32_t token;
      int64_t into;
      double similarity;
    };
    std::vector<Match> matches;
    std::vector<bool> is_kept(T, false);
    for (int32_t t : kept) is_kept[t] = true;
    for (int32_t e = 0; e < T; ++e) {
      if (is_kept[e]) continue;
      const float* key = layer.keys + (head * T + e) * D;
      const double e_norm = norm(key);
      Match best{e, 0, -2.0};
      for (int64_t j = 0; j < k; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += double{key[d]} * keys[j * D + d];
        const double u = dot / (e_norm * kept_norm[j]);
        if (u > best.similarity) best = {e, j, u};
      }
      matches.push_back(best);
    }
    double threshold = threshold_;
    if (std::isnan(threshold)) {
      threshold = 0;
      for (const auto& m : matches) threshold += m.similarity / static_cast<double>(matches.size());
    }
    std::vector<double> weight(k, 0.0), merged_k(k * D, 0.0), merged_v(k * D, 0.0);
    for (const auto& m : matches) {
      if (m.similarity < threshold) continue;
      const double w = std::exp(m.similarity);
      weight[m.into] += w;
      for (int64_t d = 0; d < D; ++d) {
        merged_k[m.into * D + d] += w * layer.keys[(head * T + m.token) * D + d];
        merged_v[m.into * D + d] += w * layer.values[(head * T + m.token) * D + d];
      }
    }
    for (int64_t j = 0; j < k; ++j) {
      if (weight[j] == 0) continue;
      const double total = weight[j] + M_E;
      for (int64_t d = 0; d < D; ++d) {
        keys[j * D + d] = static_cast<float>((M_E * keys[j * D + d] + merged_k[j * D + d]) / total);
        values[j * D + d] =
            static_cast<float>((M_E * values[j * D + d] + merged_v[j * D + d]) / total);
      }
    }
  }

 private:
  double threshold_;  // NaN: the mean of the evicted tokens' best similarities
};

// Leverage scores of the pre-RoPE keys (Chari & Van Durme 2025, the query-agnostic part of
// Compactor): keys centred over the tokens, sketched to `sketch` dimensions by a seeded Gaussian
// (0: no sketch), scored by their statistical leverage; outliers of the key space are kept.
class Leverage final : public TokenScorer {
 public:
  explicit Leverage(int64_t sketch) : sketch_(sketch) {}
  Status Score(const KvLayout& layout, const LayerView& layer,
               std::span<float> scores) const override {
    return internal::PreRopeLeverage(layout, layer, sketch_, "leverage", scores);
  }

 private:
  int64_t sketch_;
};

}  // namespace

const std::vector<MethodInfo>& Methods() {
  static const std::vector<MethodInfo> methods = {
      {"streaming_llm", "StreamingLLM: the first sinks tokens + the most recent (sinks=4)", true},
      {"key_norm",
       "key-norm: keep the keys of lowest L2 norm (sinks=0, recent=0: tokens always kept)", true},
      {"snapkv",
       "SnapKV: observation-window attention (the agent's last window queries), pooled "
       "(window=32, kernel=7, pooling=max); the window is always kept",
       true},
      {"lava",
       "LAVa: SnapKV's pooled window attention (window=32, kernel=7) times the head's largest "
       "value L1 norm, comparable across heads and layers; use with allocator lava (dynamic "
       "layer and head budgets)",
       true},
      {"laq",
       "LAQ: attention of look-ahead queries (a short draft reply the agent generates over a "
       "cheaply compressed cache; send them as following the segment), max-pooled (kernel=7); "
       "the last recent=8 tokens kept",
       true},
      {"tova", "TOVA: attention of the last query; it is always kept (no parameters)", true},
      {"h2o",
       "H2O: heavy hitters by the attention all prompt queries gave each token (the agent sends "
       "every query), plus the most recent tokens as a share of the budget (recent=50 percent)",
       true},
      {"d2o",
       "D2O: H2O's selection (recent=50 percent), then each evicted token merged into its most "
       "similar kept key (cosine >= threshold; default the mean best similarity), weights "
       "exp(similarity) against e for the kept token; send every query",
       true},
      {"leverage",
       "leverage scores of the centred pre-RoPE keys, Gaussian-sketched (sketch=48; 0: exact), "
       "Compactor's query-agnostic score; needs the RoPE frequencies and first position",
       true},
      {"curdkv",
       "CurDKV: value-guided CUR leverage, squared key norm x squared value norm, each "
       "normalised within local windows (sinks=4, window=16, combine=product|key|value|mean, "
       "sketch=0: Gaussian projection size, 0 none)",
       true},
      {"obcache",
       "OBCache: output perturbation of removing the token for each window query, "
       "a^2 ||v - o||^2 / (1 - a)^2 summed (target=joint; value: a^2 ||v||^2; key: "
       "a^2 z^2 ||v - o||^2), window=32 always kept",
       true},
      {"compactor",
       "Compactor: z-scored leverage of pre-RoPE keys (sketch=48) x blend + z-scored "
       "non-causal chunked attention (chunk=256) x value norm; blend defaults to the "
       "compression ratio; 8 sinks and 4 recent kept; needs every query and the RoPE frequencies",
       true},
      {"kvcrush",
       "KVCrush: window attention (window=32, kept) picks most tokens; share=10 percent of the "
       "count go to representatives of the would-be-evicted tokens, grouped by the Hamming "
       "distance of their binary head signatures to an anchor (anchor=mean|alternate)",
       true},
      {"mikv",
       "MiKV: the tokens SnapKV keeps (window=32, kernel=7) in the row dtype, every other token "
       "quantized per token instead of dropped (bits=2, group=32 channels); the budget counts "
       "full-precision tokens",
       false},
      {"duo",
       "DuoAttention-style head split: the retrieval heads (highest calibrated head scores) keep "
       "every token, the others sinks=4 + recent=64; retrieval=P percent of heads, or as many as "
       "the budget pays for",
       true},
      {"gear",
       "GEAR: every token; per matrix the largest outliers=2 percent of values kept exactly, "
       "the rest quantized per token (bits=4, group=32 channels) and the residual's rank-4 "
       "approximation (rank=4)",
       false},
      {"minicache",
       "MiniCache: layers from start (default the middle) merged in adjacent pairs, one SLERP "
       "direction per token and both norms, the retain=5 percent of tokens whose directions "
       "differ most kept in both layers",
       false},
      {"kivi",
       "KIVI: keys quantized per channel, values per token, in groups, the last residual "
       "tokens in full precision (bits=2, group=32, residual=128); keeps every token",
       false},
  };
  return methods;
}

Result<std::unique_ptr<TokenScorer>> MakeScorer(const MethodSpec& spec) {
  if (spec.name == "streaming_llm") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"sinks"}));
    KVCOMM_ASSIGN_OR_RETURN(int64_t sinks, IntParam(spec, "sinks", 4, 0, 1 << 20));
    return std::unique_ptr<TokenScorer>(new StreamingLlm(sinks));
  }
  if (spec.name == "key_norm") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"sinks", "recent"}));
    KVCOMM_ASSIGN_OR_RETURN(int64_t sinks, IntParam(spec, "sinks", 0, 0, 1 << 20));
    KVCOMM_ASSIGN_OR_RETURN(int64_t recent, IntParam(spec, "recent", 0, 0, 1 << 20));
    return std::unique_ptr<TokenScorer>(new KeyNorm(sinks, recent));
  }
  if (spec.name == "snapkv") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"window", "kernel", "pooling"}));
    KVCOMM_ASSIGN_OR_RETURN(int64_t window, IntParam(spec, "window", 32, 1, 4096));
    KVCOMM_ASSIGN_OR_RETURN(int64_t kernel, IntParam(spec, "kernel", 7, 1, 255));
    if (kernel % 2 == 0) return InvalidArgument("method 'snapkv': kernel={} must be odd", kernel);
    KVCOMM_ASSIGN_OR_RETURN(auto pooling, ChoiceParam(spec, "pooling", "max", {"max", "mean"}));
    return std::unique_ptr<TokenScorer>(new SnapKv(
        "snapkv", window, kernel,
        pooling == "max" ? kernels::cpu::PoolKind::kMax : kernels::cpu::PoolKind::kMean));
  }
  if (spec.name == "lava") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"window", "kernel"}));
    KVCOMM_ASSIGN_OR_RETURN(int64_t window, IntParam(spec, "window", 32, 1, 4096));
    KVCOMM_ASSIGN_OR_RETURN(int64_t kernel, IntParam(spec, "kernel", 7, 1, 255));
    if (kernel % 2 == 0) return InvalidArgument("method 'lava': kernel={} must be odd", kernel);
    return std::unique_ptr<TokenScorer>(
        new Lava("lava", window, kernel, kernels::cpu::PoolKind::kMax));
  }
  if (spec.name == "laq") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"kernel", "recent"}));
    KVCOMM_ASSIGN_OR_RETURN(int64_t kernel, IntParam(spec, "kernel", 7, 1, 255));
    if (kernel % 2 == 0) return InvalidArgument("method 'laq': kernel={} must be odd", kernel);
    KVCOMM_ASSIGN_OR_RETURN(int64_t recent, IntParam(spec, "recent", 8, 0, 1 << 20));
    return std::unique_ptr<TokenScorer>(new Laq(kernel, recent));
  }
  if (spec.name == "h2o") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"recent"}));
    KVCOMM_ASSIGN_OR_RETURN(int64_t recent, IntParam(spec, "recent", 50, 0, 100));
    return std::unique_ptr<TokenScorer>(new H2o("h2o", recent / 100.0));
  }
  if (spec.name == "d2o") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"recent", "threshold"}));
    KVCOMM_ASSIGN_OR_RETURN(int64_t recent, IntParam(spec, "recent", 50, 0, 100));
    KVCOMM_ASSIGN_OR_RETURN(double threshold, NumberParam(spec, "threshold", std::nan(""), -1, 1));
    return std::unique_ptr<TokenScorer>(new D2o(recent / 100.0, threshold));
  }
  if (spec.name == "leverage") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"sketch"}));
    KVCOMM_ASSIGN_OR_RETURN(int64_t sketch, IntParam(spec, "sketch", 48, 0, 4096));
    return std::unique_ptr<TokenScorer>(new Leverage(sketch));
  }
  if (spec.name == "tova") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {}));
    return std::unique_ptr<TokenScorer>(new Tova());
  }
  if (spec.name == "curdkv") return internal::MakeCurDkv(spec);
  if (spec.name == "obcache") return internal::MakeObCache(spec);
  if (spec.name == "compactor") return internal::MakeCompactor(spec);
  if (spec.name == "kvcrush") return internal::MakeKvCrush(spec);
  for (const auto& m : Methods())
    if (m.name == spec.name)
      return InvalidArgument("method '{}' keeps every token: it is a codec, not a selection",
                             spec.name);
  std::string known;
  for (const auto& m : Methods()) known += (known.empty() ? "" : ", ") + m.name;
  return InvalidArgument("unknown compression method '{}' (known: {})", spec.name, known);
}

}  // namespace kvcomm::kvstore::compress
