// Positional realignment on a real forward pass: layer 0's K and V depend only on the token and
// its position, so realigning a segment computed at positions [0, n) to [m, m + n) must give
// exactly what the model computes for the same tokens after an m-token prefix.
#include <gtest/gtest.h>

#include <random>

#include "agents/runtime/model.h"
#include "kernels/realign.h"

namespace kvcomm::runtime {
namespace {

TEST(RealignModel, Layer0KvRealignedToAnotherOffsetEqualsComputingItThere) {
  auto config =
      ModelConfig::FromJson(R"({"model_type": "llama", "vocab_size": 200, "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "rope_theta": 500000.0})",
                            "t");
  ASSERT_TRUE(config.ok());
  auto model = *Model::FromWeights(*config, RandomWeights(*config, 9));
  std::mt19937 rng(3);
  std::vector<int32_t> prefix(37), text(20);
  for (auto& id : prefix) id = static_cast<int32_t>(rng() % 200);
  for (auto& id : text) id = static_cast<int32_t>(rng() % 200);

  KvCache alone = *model->NewCache(64), after_prefix = *model->NewCache(64);
  ASSERT_TRUE(model->Forward(text, alone).ok());
  ASSERT_TRUE(model->Forward(prefix, after_prefix).ok());
  ASSERT_TRUE(model->Forward(text, after_prefix).ok());
  auto base = alone.Export(0, 20, DType::kF32);
  auto truth = after_prefix.Export(37, 57, DType::kF32);
  ASSERT_TRUE(base.ok() && truth.ok());

  kernels::RealignShape shape{2, 2, 20, 16, 0, 1};
  std::vector<int32_t> from(20), to(20);
  for (int t = 0; t < 20; ++t) {
    from[t] = t;
    to[t] = 37 + t;
  }
  std::vector<float> out(shape.SegmentElements());
  kernels::cpu::RealignKv(shape, reinterpret_cast<const float*>(base->data()), from, to,
                          config->RopeInverseFrequencies(), nullptr, nullptr, nullptr, out.data());
  const float* want = reinterpret_cast<const float*>(truth->data());
  const int64_t layer0 = 2 * 2 * 20 * 16;  // K and V of layer 0
  for (int64_t i = 0; i < layer0; ++i) ASSERT_NEAR(out[i], want[i], 1e-4) << i;
  // Deeper layers differ: that context part is what anchors estimate.
  double deeper = 0;
  for (int64_t i = layer0; i < shape.SegmentElements(); ++i)
    deeper = std::max(deeper, double{std::abs(out[i] - want[i])});
  EXPECT_GT(deeper, 1e-3);
}

}  // namespace
}  // namespace kvcomm::runtime
