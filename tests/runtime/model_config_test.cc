#include "agents/runtime/model_config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

namespace kvcomm::runtime {
namespace {

std::string Config(const std::string& extra = "", const std::string& model_type = "llama") {
  return R"({"model_type": ")" + model_type + R"(", "vocab_size": 100, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2)" +
         extra + "}";
}

TEST(ModelConfig, ParsesAMinimalLlamaConfigWithDefaults) {
  auto c = ModelConfig::FromJson(Config(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->rope_theta, 10000.0);
  EXPECT_FALSE(c->attention_bias);
}

TEST(ModelConfig, UnsupportedOrBrokenConfigsNameTheProblem) {
  struct Case {
    std::string json;
    const char* mentions;
  };
  const Case cases[] = {
      {Config("", "gpt2"), "gpt2"},
      {R"({"model_type": "llama"})", "vocab_size"},
      {Config(R"(, "num_key_value_heads": 3)"), "multiple"},
      {Config(R"(, "hidden_act": "gelu")"), "hidden_act"},
      {Config(R"(, "rope_scaling": {"type": "yarn", "factor": 4})"), "yarn"},
      {Config(R"(, "sliding_window": 4096)", "mistral"), "sliding"},
      {Config(R"(, "layer_types": ["full_attention", "sliding_attention"])"), "sliding_attention"},
      {Config(R"(, "torch_dtype": "float64")"), "float64"},
      {Config(R"(, "hidden_size": "big")"), "hidden_size"},
      {"[1, 2]", "JSON object"},
  };
  for (const auto& c : cases) {
    auto parsed = ModelConfig::FromJson(c.json, "config.json");
    ASSERT_FALSE(parsed.ok()) << c.json;
    EXPECT_NE(parsed.status().message().find(c.mentions), std::string::npos)
        << parsed.status().ToString();
  }
}

TEST(ModelConfig, Llama3RopeScalingFollowsTheFormula) {
  auto c = ModelConfig::FromJson(
      Config(R"(, "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3",
      "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})"),
      "config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto inv_freq = c->RopeInverseFrequencies();
  ASSERT_EQ(inv_freq.size(), 8u);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const double base = 1.0 / std::pow(500000.0, 2.0 * i / 16);
    const double wavelen = 2 * std::numbers::pi / base;
    if (wavelen < 8192 / 4.0) {
      EXPECT_NEAR(inv_freq[i], base, base * 1e-6) << i;  // high frequencies untouched
    } else if (wavelen > 8192 / 1.0) {
      EXPECT_NEAR(inv_freq[i], base / 8, base * 1e-6)
          << i;  // low frequencies divided by the factor
    } else {
      EXPECT_LT(inv_freq[i], base);
      EXPECT_GT(inv_freq[i], base / 8);
    }
  }
}

}  // namespace
}  // namespace kvcomm::runtime
