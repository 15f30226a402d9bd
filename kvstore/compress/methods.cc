#include "kvstore/compress/methods.h"

#include <algorithm>
#include <cmath>

#include "kernels/compress.h"

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
  int64_t recent() const override { return recent_; }

 private:
  int64_t sinks_, recent_;
};

Status NeedWindow(const LayerView& layer, int64_t window, std::string_view method) {
  if (layer.queries == nullptr || layer.window < window)
    return InvalidArgument("method '{}' needs the last {} queries of every layer (got {})", method,
                           window, layer.queries ? layer.window : 0);
  return Status();
}

// Attention from the last `window` of the given queries, the earlier ones dropped.
void WindowScores(const KvLayout& layout, const LayerView& layer, int64_t window, float* out) {
  const int64_t skip = layer.window - window;
  std::vector<float> queries;
  const float* q = layer.queries;
  if (skip > 0) {
    queries.resize(layer.q_heads * window * layout.head_dim);
    for (int64_t h = 0; h < layer.q_heads; ++h)
      std::copy_n(layer.queries + (h * layer.window + skip) * layout.head_dim,
                  window * layout.head_dim, queries.data() + h * window * layout.head_dim);
    q = queries.data();
  }
  kernels::cpu::ObservationScores(q, layer.keys, layer.q_heads, layout.kv_heads, window,
                                  layout.tokens, layout.head_dim, out);
}

// SnapKV (Li et al. 2024): the observation window's attention to each token, pooled along
// tokens so kept tokens bring their neighbours; the window itself is always kept.
class SnapKv final : public TokenScorer {
 public:
  SnapKv(int64_t window, int64_t kernel, kernels::cpu::PoolKind pool)
      : window_(window), kernel_(kernel), pool_(pool) {}
  Status Score(const KvLayout& layout, const LayerView& layer,
               std::span<float> scores) const override {
    KVCOMM_RETURN_IF_ERROR(NeedWindow(layer, window_, "snapkv"));
    if (window_ > layout.tokens)
      return InvalidArgument("snapkv: window {} is longer than the segment ({} tokens)", window_,
                             layout.tokens);
    std::vector<float> raw(scores.size());
    WindowScores(layout, layer, window_, raw.data());
    kernels::cpu::Pool1D(raw.data(), layout.kv_heads, layout.tokens, kernel_, pool_, scores.data());
    return Status();
  }
  int64_t recent() const override { return window_; }
  bool needs_queries() const override { return true; }

 private:
  int64_t window_, kernel_;
  kernels::cpu::PoolKind pool_;
};

// TOVA (Oren et al. 2024): keep the tokens the last query attends to most (here per kv head,
// the group's query heads summed).
class Tova final : public TokenScorer {
 public:
  Status Score(const KvLayout& layout, const LayerView& layer,
               std::span<float> scores) const override {
    KVCOMM_RETURN_IF_ERROR(NeedWindow(layer, 1, "tova"));
    WindowScores(layout, layer, 1, scores.data());
    return Status();
  }
  int64_t recent() const override { return 1; }
  bool needs_queries() const override { return true; }
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
      {"tova", "TOVA: attention of the last query; it is always kept (no parameters)", true},
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
        window, kernel,
        pooling == "max" ? kernels::cpu::PoolKind::kMax : kernels::cpu::PoolKind::kMean));
  }
  if (spec.name == "tova") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {}));
    return std::unique_ptr<TokenScorer>(new Tova());
  }
  for (const auto& m : Methods())
    if (m.name == spec.name)
      return InvalidArgument("method '{}' keeps every token: it is a codec, not a selection",
                             spec.name);
  std::string known;
  for (const auto& m : Methods()) known += (known.empty() ? "" : ", ") + m.name;
  return InvalidArgument("unknown compression method '{}' (known: {})", spec.name, known);
}

}  // namespace kvcomm::kvstore::compress
