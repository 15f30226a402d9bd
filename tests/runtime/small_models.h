// A small random Llama model whose weights are bf16-representable, so the CPU and CUDA backends
// start from the same numbers (the tests comparing them, or a backend with itself).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "agents/runtime/model.h"
#include "common/dtype.h"

namespace kvcomm::runtime::testing {

inline ModelConfig SmallLlamaConfig(int layers) {
  auto config = ModelConfig::FromJson(
      R"({"model_type": "llama", "vocab_size": 512, "hidden_size": 256,
      "intermediate_size": 512, "num_hidden_layers": )" +
          std::to_string(layers) + R"(, "num_attention_heads": 8, "num_key_value_heads": 2})",
      "t");
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return *config;
}

// Seeded random weights (scaled by 5) rounded to bf16.
inline ModelWeights Bf16RoundedWeights(const ModelConfig& config, uint64_t seed) {
  ModelWeights weights = RandomWeights(config, seed);
  auto round = [](std::vector<float>& v) {
    for (auto& x : v) x = BFloat16ToFloat(FloatToBFloat16(x * 5));
  };
  round(weights.embed);
  round(weights.lm_head);
  for (auto& l : weights.layers)
    for (auto* t : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) round(*t);
  return weights;
}

}  // namespace kvcomm::runtime::testing
