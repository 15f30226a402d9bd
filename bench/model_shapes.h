// What the benchmarks share: model shapes (random weights in real model geometries, without
// checkpoints) and stopping on errors.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "agents/runtime/model_config.h"

namespace kvcomm::bench {

// Benchmarks stop at the first error, naming the program.
inline void ExitOnError(const char* program, const Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, s.ToString().c_str());
    std::exit(1);
  }
}

// "llama3-8b" (Llama-3-8B, bf16 on the GPU) or "tiny-20m" (~20M parameters, for CPU runs);
// exits with a message on other names.
inline runtime::ModelConfig Shape(const std::string& name) {
  std::string json;
  if (name == "llama3-8b") {
    json =
        R"({"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "rope_theta": 500000.0,
        "max_position_embeddings": 131072, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})";
  } else if (name == "tiny-20m") {
    json =
        R"({"model_type": "llama", "vocab_size": 8192, "hidden_size": 512, "intermediate_size": 1408,
        "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 4, "tie_word_embeddings": true,
        "max_position_embeddings": 8192})";
  } else {
    std::fprintf(stderr, "unknown shape '%s' (llama3-8b, tiny-20m)\n", name.c_str());
    std::exit(1);
  }
  auto config = runtime::ModelConfig::FromJson(json, name);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    std::exit(1);
  }
  return *config;
}

inline int64_t Parameters(const runtime::ModelConfig& c) {
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const int64_t layer = c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size +
                        2 * c.hidden_size;
  return c.num_layers * layer + c.vocab_size * c.hidden_size * (c.tie_word_embeddings ? 1 : 2) +
         c.hidden_size;
}

}  // namespace kvcomm::bench
