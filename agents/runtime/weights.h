// ModelWeights: a checkpoint's tensors as fp32 host arrays, loaded from Hugging Face safetensors
// (one model.safetensors or shards listed in model.safetensors.index.json; BF16, F16 or F32) or
// generated from a seed. Every expected tensor is checked for presence, shape and dtype, with
// errors that name the tensor and the file.
#pragma once

#include <string>
#include <vector>

#include "agents/runtime/model_config.h"
#include "common/hash.h"

namespace kvcomm::runtime {

struct LayerWeights {
  std::vector<float> input_norm;  // [hidden]
  std::vector<float> q, k, v, o;  // [heads*hd, hidden], [kv*hd, hidden] x2, [hidden, heads*hd]
  std::vector<float> q_bias, k_bias, v_bias;  // empty unless attention_bias
  std::vector<float> post_norm;               // [hidden]
  std::vector<float> gate, up, down;          // [inter, hidden] x2, [hidden, inter]
};

struct ModelWeights {
  std::vector<float> embed;       // [vocab, hidden]
  std::vector<float> final_norm;  // [hidden]
  std::vector<float> lm_head;     // [vocab, hidden]; empty when tied to embed
  std::vector<LayerWeights> layers;
  Hash128 content_hash;  // of every tensor's stored bytes, in load order

  const std::vector<float>& output_projection() const { return lm_head.empty() ? embed : lm_head; }
};

Result<ModelWeights> LoadWeights(const std::string& model_dir, const ModelConfig& config);
// Deterministic random weights (normal, std 0.02; norms 1) for shape tests and timing.
ModelWeights RandomWeights(const ModelConfig& config, uint64_t seed);

}  // namespace kvcomm::runtime
