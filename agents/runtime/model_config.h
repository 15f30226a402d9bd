// ModelConfig: the architecture of a Llama-family checkpoint, read from Hugging Face's
// config.json. Supported: LlamaForCausalLM / MistralForCausalLM (model_type "llama",
// "mistral") and Qwen2ForCausalLM ("qwen2", q/k/v biases). Anything else is refused with an
// error that names the unsupported field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/keys.h"
#include "common/status.h"

namespace kvcomm::runtime {

struct RopeScaling {
  std::string type;  // "" (none), "linear" or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string model_type;  // "llama", "mistral", "qwen2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections have biases (Qwen2)
  int32_t bos_token_id = -1;    // -1: none
  std::vector<int32_t> eos_token_ids;
  DType dtype = DType::kBF16;  // torch_dtype of the checkpoint

  // Parses config.json text; `origin` names the file in errors.
  static Result<ModelConfig> FromJson(const std::string& text, const std::string& origin);
  static Result<ModelConfig> FromFile(const std::string& path);
  Status Validate() const;

  // RoPE inverse frequencies (head_dim / 2 of them) with the configured scaling applied.
  std::vector<float> RopeInverseFrequencies() const;
  // The parts of the architecture that change KV (for the model fingerprint).
  ModelArchitecture Architecture() const;
};

}  // namespace kvcomm::runtime
