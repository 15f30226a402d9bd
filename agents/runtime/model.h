// Model: a Llama-family decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU MLP; Qwen2
// q/k/v biases; tied or untied embeddings) on one of two backends with one API: CPU (fp32,
// OpenBLAS) or CUDA (bf16 weights and KV, fp32 accumulation and residual stream, cuBLAS).
// Forward may be called concurrently on different caches on the CPU backend; the CUDA backend
// serialises calls (one stream).
#pragma once

#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "agents/runtime/kv_cache.h"
#include "agents/runtime/model_config.h"
#include "agents/runtime/weights.h"
#include "common/keys.h"

namespace kvcomm::runtime {

namespace internal {
class Engine;
}

// The queries (after RoPE) of the last `tokens` tokens of one Forward call, per layer:
// queries[layer][q_head][token][head_dim]. What query-aware KV compression scores the cache
// with (the observation window). CPU backend only.
struct QueryCapture {
  int64_t tokens = 0;
  std::vector<float> queries;
};

class Model {
 public:
  // Loads config.json and the safetensors weights of a Hugging Face model directory.
  static Result<std::unique_ptr<Model>> Load(const std::string& model_dir,
                                             Device device = Device::kCpu);
  static Result<std::unique_ptr<Model>> FromWeights(ModelConfig config, ModelWeights weights,
                                                    Device device = Device::kCpu);
  // Seeded random weights generated directly in device memory (real model shapes, no files).
  static Result<std::unique_ptr<Model>> RandomOnGpu(ModelConfig config, uint64_t seed);
  ~Model();

  const ModelConfig& config() const { return config_; }
  Device device() const;
  ModelFingerprint fingerprint() const { return fingerprint_; }
  Result<KvCache> NewCache(int64_t capacity) const {
    return KvCache::Create(config_, capacity, device());
  }

  // Runs `tokens` at positions cache.length() .. cache.length() + n - 1, writing their K and V
  // into the cache (positions already valid after them are kept: imported segments). Returns
  // logits [n][vocab] if all_logits, else the last token's [vocab].
  Result<std::vector<float>> Forward(std::span<const int32_t> tokens, KvCache& cache,
                                     bool all_logits = false,
                                     QueryCapture* capture = nullptr) const;

  // Several runs of tokens in one pass: the gaps a prompt with reused segments leaves. The runs
  // ascend and do not overlap; the first starts at cache.length() and every position between
  // two runs already holds valid KV (imported). The same as Forward on each run in order, but
  // the CUDA backend reads the weights once for all of them (a few-token prefill costs about
  // one pass over the weights). Returns the last run's last-token logits.
  struct TokenRun {
    std::span<const int32_t> tokens;
    int64_t position;
  };
  Result<std::vector<float>> ForwardRuns(std::span<const TokenRun> runs, KvCache& cache) const;

 private:
  // Runs ascend from cache.length() on, fit the cache, hold known tokens, and between two of
  // them every position holds valid KV.
  Status CheckRuns(std::span<const TokenRun> runs, const KvCache& cache) const;
  Model(ModelConfig config, Hash128 weights_hash, std::unique_ptr<internal::Engine> engine);

  ModelConfig config_;
  ModelFingerprint fingerprint_;
  std::unique_ptr<internal::Engine> engine_;
  mutable std::mutex cuda_mu_;
};

}  // namespace kvcomm::runtime
