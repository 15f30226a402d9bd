#include "agents/runtime/model.h"

#include <cmath>
#include <filesystem>

#include "kernels/model_ops.h"

namespace kvcomm::runtime {

namespace ops = kernels::cpu;

Model::Model(ModelConfig config, ModelWeights weights)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      inv_freq_(config_.RopeInverseFrequencies()),
      fingerprint_(ComputeModelFingerprint(config_.Architecture(), weights_.content_hash)) {}

Result<std::unique_ptr<Model>> Model::Load(const std::string& model_dir) {
  const std::string config_path = (std::filesystem::path(model_dir) / "config.json").string();
  KVCOMM_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromFile(config_path));
  KVCOMM_ASSIGN_OR_RETURN(ModelWeights weights, LoadWeights(model_dir, config));
  return std::unique_ptr<Model>(new Model(std::move(config), std::move(weights)));
}

std::unique_ptr<Model> Model::FromWeights(ModelConfig config, ModelWeights weights) {
  return std::unique_ptr<Model>(new Model(std::move(config), std::move(weights)));
}

Result<std::vector<float>> Model::Forward(std::span<const int32_t> tokens, KvCache& cache,
                                          bool all_logits) const {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t start = cache.length();
  if (n == 0) return InvalidArgument("Forward needs at least one token");
  if (start + n > cache.capacity()) {
    return InvalidArgument("{} tokens after {} cached positions exceed the cache capacity {}", n, start,
                           cache.capacity());
  }
  for (int64_t p = start; p < start + n; ++p) {
    if (cache.IsValid(p)) {
      return InvalidArgument("tokens for positions [{}, {}) overlap KV already in the cache at {}", start,
                             start + n, p);
    }
  }
  for (int32_t id : tokens) {
    if (id < 0 || id >= c.vocab_size) return InvalidArgument("token id {} is outside the vocabulary of {}", id, c.vocab_size);
  }

  const int64_t hidden = c.hidden_size, heads = c.num_heads, kv_heads = c.num_kv_heads, hd = c.head_dim;
  const int64_t q_dim = heads * hd, kv_dim = kv_heads * hd, inter = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<int32_t> positions(n);
  for (int64_t t = 0; t < n; ++t) positions[t] = static_cast<int32_t>(start + t);

  std::vector<float> x(n * hidden), h(n * hidden), q(n * q_dim), k(n * kv_dim), v(n * kv_dim), attn(n * q_dim),
      gate(n * inter), up(n * inter);
  ops::Embedding(weights_.embed.data(), tokens, hidden, x.data());
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    const LayerWeights& w = weights_.layers[layer];
    auto bias = [](const std::vector<float>& b) { return b.empty() ? nullptr : b.data(); };
    ops::RmsNorm(x.data(), w.input_norm.data(), n, hidden, eps, h.data());
    ops::Linear(h.data(), w.q.data(), bias(w.q_bias), n, hidden, q_dim, q.data());
    ops::Linear(h.data(), w.k.data(), bias(w.k_bias), n, hidden, kv_dim, k.data());
    ops::Linear(h.data(), w.v.data(), bias(w.v_bias), n, hidden, kv_dim, v.data());
    ops::Rope(q.data(), positions, heads, hd, inv_freq_);
    ops::Rope(k.data(), positions, kv_heads, hd, inv_freq_);
    // Token-major [n][kv_heads][hd] into the cache's head-major [kv_heads][capacity][hd].
    float* k_cache = cache.keys(layer);
    float* v_cache = cache.values(layer);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t g = 0; g < kv_heads; ++g) {
        const int64_t to = (g * cache.capacity() + start + t) * hd;
        std::copy_n(k.data() + (t * kv_heads + g) * hd, hd, k_cache + to);
        std::copy_n(v.data() + (t * kv_heads + g) * hd, hd, v_cache + to);
      }
    }
    ops::Attention(q.data(), k_cache, v_cache, n, start, heads, kv_heads, hd, cache.capacity(), scale, attn.data());
    ops::Linear(attn.data(), w.o.data(), nullptr, n, q_dim, hidden, h.data());
    ops::AddInPlace(x.data(), h.data(), n * hidden);

    ops::RmsNorm(x.data(), w.post_norm.data(), n, hidden, eps, h.data());
    ops::Linear(h.data(), w.gate.data(), nullptr, n, hidden, inter, gate.data());
    ops::Linear(h.data(), w.up.data(), nullptr, n, hidden, inter, up.data());
    ops::SwiGlu(gate.data(), up.data(), n * inter, gate.data());
    ops::Linear(gate.data(), w.down.data(), nullptr, n, inter, hidden, h.data());
    ops::AddInPlace(x.data(), h.data(), n * hidden);
  }
  cache.MarkValid(start, start + n);

  const int64_t rows = all_logits ? n : 1;
  const float* last = x.data() + (n - rows) * hidden;
  ops::RmsNorm(last, weights_.final_norm.data(), rows, hidden, eps, h.data());
  std::vector<float> logits(rows * c.vocab_size);
  ops::Linear(h.data(), weights_.output_projection().data(), nullptr, rows, hidden, c.vocab_size, logits.data());
  return logits;
}

}  // namespace kvcomm::runtime
