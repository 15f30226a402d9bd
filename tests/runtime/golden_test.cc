// Our CPU runtime against logits that transformers computed from the same files
// (tools/make_golden_models.py, run once on the GPU machine; the files are in tests/data/golden).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "agents/runtime/model.h"
#include "common/safetensors.h"

namespace kvcomm::runtime {
namespace {

const std::string kGoldenDir = KVCOMM_SOURCE_DIR "/tests/data/golden/";

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, LogitsMatchTransformersInFloat32) {
  const std::string dir = kGoldenDir + GetParam();
  auto model = Model::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto golden = SafetensorsFile::Open(dir + "/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status().ToString();
  const auto* ids_tensor = golden->Find("token_ids");
  const auto* logits_tensor = golden->Find("logits");
  ASSERT_NE(ids_tensor, nullptr);
  ASSERT_NE(logits_tensor, nullptr);
  std::vector<int32_t> ids(ids_tensor->shape[0]);
  std::memcpy(ids.data(), ids_tensor->data.data(), ids.size() * 4);
  const int64_t vocab = (*model)->config().vocab_size;
  ASSERT_EQ(logits_tensor->shape,
            (std::vector<uint64_t>{ids.size(), static_cast<uint64_t>(vocab)}));
  const float* expected = reinterpret_cast<const float*>(logits_tensor->data.data());

  KvCache cache = *(*model)->NewCache(64);
  auto logits = (*model)->Forward(ids, cache, /*all_logits=*/true);
  ASSERT_TRUE(logits.ok()) << logits.status().ToString();
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < logits->size(); ++i) {
    max_err = std::max(max_err, double{std::abs((*logits)[i] - expected[i])});
    max_ref = std::max(max_ref, double{std::abs(expected[i])});
  }
  EXPECT_GT(max_ref, 0.1) << "golden logits are degenerate";
  EXPECT_LT(max_err / max_ref, 1e-4)
      << "max abs error " << max_err << " of max |logit| " << max_ref;
  for (size_t t = 0; t < ids.size(); ++t) {  // same argmax at every position
    const float* ours = logits->data() + t * vocab;
    const float* theirs = expected + t * vocab;
    EXPECT_EQ(std::max_element(ours, ours + vocab) - ours,
              std::max_element(theirs, theirs + vocab) - theirs)
        << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, GoldenTest, ::testing::Values("llama", "qwen2"));

TEST(GoldenModels, ConfigsParseAsTheyWereWritten) {
  auto llama = ModelConfig::FromFile(kGoldenDir + "llama/config.json");
  ASSERT_TRUE(llama.ok()) << llama.status().ToString();
  EXPECT_EQ(llama->rope_scaling.type, "llama3");
  EXPECT_EQ(llama->num_kv_heads, 2);
  EXPECT_FALSE(llama->tie_word_embeddings);
  auto qwen = ModelConfig::FromFile(kGoldenDir + "qwen2/config.json");
  ASSERT_TRUE(qwen.ok()) << qwen.status().ToString();
  EXPECT_TRUE(qwen->attention_bias);
  EXPECT_TRUE(qwen->tie_word_embeddings);
  EXPECT_EQ(qwen->rope_theta, 1000000.0);
  EXPECT_EQ(qwen->dtype, DType::kBF16);
}

}  // namespace
}  // namespace kvcomm::runtime
