// Model: a Llama-family decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU MLP; Qwen2
// q/k/v biases; tied or untied embeddings) running on the CPU backend (OpenBLAS GEMM and the
// kernels/ reference ops). Thread-safe for concurrent Forward calls on different caches.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "agents/runtime/kv_cache.h"
#include "agents/runtime/model_config.h"
#include "agents/runtime/weights.h"
#include "common/keys.h"

namespace kvcomm::runtime {

class Model {
 public:
  // Loads config.json and the safetensors weights of a Hugging Face model directory.
  static Result<std::unique_ptr<Model>> Load(const std::string& model_dir);
  static std::unique_ptr<Model> FromWeights(ModelConfig config, ModelWeights weights);

  const ModelConfig& config() const { return config_; }
  ModelFingerprint fingerprint() const { return fingerprint_; }
  KvCache NewCache(int64_t capacity) const { return KvCache(config_, capacity); }

  // Runs `tokens` at positions cache.length() .. cache.length() + n - 1, writing their K and V
  // into the cache (positions already valid after them are kept: imported segments). Returns
  // logits [n][vocab] if all_logits, else the last token's [vocab].
  Result<std::vector<float>> Forward(std::span<const int32_t> tokens, KvCache& cache,
                                     bool all_logits = false) const;

 private:
  Model(ModelConfig config, ModelWeights weights);

  ModelConfig config_;
  ModelWeights weights_;
  std::vector<float> inv_freq_;
  ModelFingerprint fingerprint_;
};

}  // namespace kvcomm::runtime
