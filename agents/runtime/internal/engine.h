// Engine: one backend's forward pass. Model validates inputs and then calls exactly one engine.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "agents/runtime/kv_cache.h"
#include "agents/runtime/model.h"
#include "agents/runtime/model_config.h"
#include "agents/runtime/weights.h"

namespace kvcomm::runtime::internal {

// Rows [row, row + rows) of a batch hold tokens at positions start .. start + rows - 1.
struct RowRun {
  int64_t row, rows, start;
};
// The runs' tokens back to back in `tokens`, and where each run's rows are.
inline std::vector<RowRun> ConcatenateRuns(std::span<const Model::TokenRun> runs,
                                           std::vector<int32_t>* tokens) {
  std::vector<RowRun> rows;
  for (const auto& run : runs) {
    rows.push_back({static_cast<int64_t>(tokens->size()), static_cast<int64_t>(run.tokens.size()),
                    run.position});
    tokens->insert(tokens->end(), run.tokens.begin(), run.tokens.end());
  }
  return rows;
}
// The position of every row of `n`.
inline std::vector<int32_t> RowPositions(std::span<const RowRun> runs, int64_t n) {
  std::vector<int32_t> positions(n);
  for (const RowRun& run : runs)
    for (int64_t t = 0; t < run.rows; ++t)
      positions[run.row + t] = static_cast<int32_t>(run.start + t);
  return positions;
}

class Engine {
 public:
  virtual ~Engine() = default;
  virtual Device device() const = 0;
  // Computes `tokens` at positions start .. start + n - 1 (already checked to be free and inside
  // the cache, with valid KV before them) and returns the logits of the last token, or of all.
  // With `capture` (CPU only; sized by Model) the last capture->tokens queries are kept.
  virtual Result<std::vector<float>> Forward(std::span<const int32_t> tokens, int64_t start,
                                             KvCache& cache, bool all_logits,
                                             QueryCapture* capture) = 0;
  // Model::ForwardRuns, checked. By default one Forward per run, in order.
  virtual Result<std::vector<float>> ForwardRuns(std::span<const Model::TokenRun> runs,
                                                 KvCache& cache) {
    std::vector<float> logits;
    for (const auto& run : runs) {
      KVCOMM_ASSIGN_OR_RETURN(logits, Forward(run.tokens, run.position, cache, false, nullptr));
    }
    return logits;
  }
};

std::unique_ptr<Engine> MakeCpuEngine(const ModelConfig& config, ModelWeights weights);
// Uploads `weights` as bf16, or, if null, fills device memory with seeded random weights
// (normal, std 0.02; norms 1) without touching host memory. kUnavailable without CUDA.
Result<std::unique_ptr<Engine>> MakeCudaEngine(const ModelConfig& config,
                                               const ModelWeights* weights, uint64_t seed);

}  // namespace kvcomm::runtime::internal
