#include "agents/runtime/generate.h"

#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <fstream>

#include "tests/kvstore/test_segments.h"

namespace kvcomm::runtime {
namespace {

TEST(Sampler, GreedyPicksTheArgmaxAndSmallTopPToo) {
  const std::vector<float> logits = {0.1f, 2.5f, -1.0f, 2.4f};
  Sampler greedy({0.0f, 1.0f, 0});
  EXPECT_EQ(greedy.Sample(logits), 1);
  Sampler nucleus({1.0f, 0.01f, 3});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(nucleus.Sample(logits), 1);
}

TEST(Sampler, SeededSamplingIsReproducibleAndFollowsTheDistribution) {
  const std::vector<float> logits = {0.0f, std::log(3.0f)};  // p = 0.25, 0.75
  Sampler a({1.0f, 1.0f, 42}), b({1.0f, 1.0f, 42});
  int ones = 0;
  for (int i = 0; i < 4000; ++i) {
    int32_t x = a.Sample(logits);
    EXPECT_EQ(x, b.Sample(logits));
    ones += x;
  }
  EXPECT_NEAR(ones / 4000.0, 0.75, 0.03);
}

TEST(Sampler, BadOptionsAreRefused) {
  EXPECT_FALSE((SamplingOptions{-1.0f, 1.0f, 0}).Validate().ok());
  EXPECT_FALSE((SamplingOptions{1.0f, 0.0f, 0}).Validate().ok());
  EXPECT_FALSE((SamplingOptions{1.0f, 1.5f, 0}).Validate().ok());
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(kvcomm::testing::TempDir("spm"));
    std::ofstream corpus(*dir_ + "/corpus.txt");
    for (int i = 0; i < 200; ++i) {
      corpus << "Agent " << i % 7 << " reports that the code word is blue harbor number " << i
             << ".\n";
      corpus << "The planner asks the coder to review the cache before the final answer.\n";
    }
    corpus.close();
    auto status = sentencepiece::SentencePieceTrainer::Train(
        "--input=" + *dir_ + "/corpus.txt --model_prefix=" + *dir_ +
        "/tok --vocab_size=400 --model_type=bpe --byte_fallback=true --minloglevel=2");
    ASSERT_TRUE(status.ok()) << status.ToString();
  }
  static std::string* dir_;
};
std::string* TokenizerTest::dir_ = nullptr;

TEST_F(TokenizerTest, EncodeDecodeRoundTripsIncludingUnseenBytes) {
  auto tok = Tokenizer::Load(*dir_ + "/tok.model");
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ((*tok)->vocab_size(), 400);
  for (const std::string text : {"The coder reports the code word.", "unseen: zebra \xc3\xa9 42"}) {
    auto ids = (*tok)->Encode(text);
    ASSERT_TRUE(ids.ok());
    EXPECT_FALSE(ids->empty());
    auto back = (*tok)->Decode(*ids);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, text);
  }
  EXPECT_FALSE((*tok)->Decode({5000}).ok());
  EXPECT_FALSE(Tokenizer::Load(*dir_ + "/missing.model").ok());
}

TEST_F(TokenizerTest, GenerationStopsAtTokensStringsAndBudget) {
  auto tok = Tokenizer::Load(*dir_ + "/tok.model");
  ASSERT_TRUE(tok.ok());
  auto config =
      ModelConfig::FromJson(R"({"model_type": "llama", "vocab_size": 400, "hidden_size": 32,
      "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4})",
                            "t");
  ASSERT_TRUE(config.ok());
  auto model = *Model::FromWeights(*config, RandomWeights(*config, 3));
  auto prompt = (*tok)->Encode("The planner asks");
  ASSERT_TRUE(prompt.ok());

  GenerateOptions options;
  options.max_new_tokens = 12;
  KvCache cache = *model->NewCache(64);
  auto first = Generate(*model, tok->get(), *prompt, cache, options);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->tokens.size(), 12u);
  EXPECT_EQ(first->stop_reason, "max_new_tokens");
  EXPECT_EQ(first->decode_tokens, 11);

  options.stop_tokens = {first->tokens[3]};  // greedy is deterministic: stops before that token
  KvCache again = *model->NewCache(64);
  auto stopped = Generate(*model, tok->get(), *prompt, again, options);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->stop_reason, "stop_token");
  EXPECT_EQ(
      stopped->tokens.size(),
      static_cast<size_t>(std::find(first->tokens.begin(), first->tokens.end(), first->tokens[3]) -
                          first->tokens.begin()));

  KvCache small = *model->NewCache(static_cast<int64_t>(prompt->size()) + 2);
  options.stop_tokens.clear();
  auto full = Generate(*model, tok->get(), *prompt, small, options);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->stop_reason, "context_full");
  EXPECT_EQ(full->tokens.size(), 3u);
}

}  // namespace
}  // namespace kvcomm::runtime
