// Token generation: greedy (temperature 0) or temperature + top-p sampling with a seed, stop
// tokens and stop strings, a token budget, and timings (prefill time = TTFT, decode tokens/s).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "agents/runtime/model.h"
#include "agents/runtime/morph_kv.h"
#include "agents/runtime/tokenizer.h"

namespace kvcomm::runtime {

struct SamplingOptions {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;        // nucleus mass in (0, 1]
  uint64_t seed = 0;
  Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}
  int32_t Sample(std::span<const float> logits);

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  std::vector<int32_t> stop_tokens;       // generation ends after emitting one (not included)
  std::vector<std::string> stop_strings;  // generation ends when the text contains one (cut there)
  bool keep_prompt_logits = false;        // return the last prompt token's logits
  MorphKvOptions morph;                   // decode-time compression (capacity 0: off; CPU)
  // Gaps before the prompt in a cache with imported KV: computed with the prompt in one pass
  // (Model::ForwardRuns), the prompt then going where the KV after the last gap ends.
  std::vector<Model::TokenRun> gaps_before;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated, without the prompt
  std::string text;             // decoded `tokens` (empty without a tokenizer)
  std::string stop_reason;      // "max_new_tokens", "stop_token", "stop_string", "context_full"
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;        // time to first token
  std::vector<float> prompt_logits;  // [vocab] after the prompt, if keep_prompt_logits
  int64_t decode_tokens = 0;
  double decode_seconds = 0;
  double DecodeTokensPerSecond() const {
    return decode_seconds > 0 ? decode_tokens / decode_seconds : 0;
  }
};

// Runs the prompt through `cache` (continuing after what it already holds) and generates.
// `tokenizer` may be null when no stop strings are given.
Result<GenerateResult> Generate(const Model& model, const Tokenizer* tokenizer,
                                std::span<const int32_t> prompt, KvCache& cache,
                                const GenerateOptions& options);

// LAQ's look-ahead queries: decodes `tokens` tokens greedily after `first` over `cache` (which
// it extends; give it a copy), keeping every step's queries after RoPE:
// [layer][q_head][tokens][head_dim]. CPU backend.
Result<std::vector<float>> DraftQueries(const Model& model, KvCache& cache, int32_t first,
                                        int64_t tokens);

}  // namespace kvcomm::runtime
