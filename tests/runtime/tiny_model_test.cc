// models/kvcomm-tiny, the shipped model: our runtime's greedy generations against transformers'
// (tests/data/golden/kvcomm-tiny-greedy.json, written by tools/make_tiny_golden.py on the GPU
// machine), and our tokenizer (Debian's libsentencepiece) against the prompt ids recorded there.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agents/runtime/generate.h"
#include "agents/runtime/model.h"
#include "agents/runtime/tokenizer.h"

namespace kvcomm::runtime {
namespace {

const std::string kModelDir = KVCOMM_SOURCE_DIR "/models/kvcomm-tiny";

nlohmann::json Golden() {
  std::ifstream in(KVCOMM_SOURCE_DIR "/tests/data/golden/kvcomm-tiny-greedy.json");
  EXPECT_TRUE(in.good()) << "missing golden file";
  return nlohmann::json::parse(in);
}

std::vector<int32_t> Greedy(const Model& model, const std::vector<int32_t>& prompt, int64_t n) {
  auto cache = model.NewCache(static_cast<int64_t>(prompt.size()) + n);
  EXPECT_TRUE(cache.ok()) << cache.status().ToString();
  GenerateOptions options;
  options.max_new_tokens = n;  // no stop tokens: exactly n tokens, as the golden run
  auto out = Generate(model, nullptr, prompt, *cache, options);
  EXPECT_TRUE(out.ok()) << out.status().ToString();
  return out.ok() ? out->tokens : std::vector<int32_t>{};
}

// Greedy continuations in two precisions must be the same tokens until precision has to break
// a near-tie: at the first step where they part, the float32 logits of the two choices must be
// within 1% of each other (bf16 keeps ~3 significant digits per value, and errors add up over
// the layers). A difference anywhere else is a failure, named with the margin.
testing::AssertionResult SameUntilNearTie(const Model& fp32, std::vector<int32_t> prompt,
                                          const std::vector<int32_t>& a,
                                          const std::vector<int32_t>& b) {
  size_t step = 0;
  while (step < a.size() && step < b.size() && a[step] == b[step]) ++step;
  if (step == a.size() || step == b.size()) return testing::AssertionSuccess();
  prompt.insert(prompt.end(), a.begin(), a.begin() + static_cast<int64_t>(step));
  auto cache = fp32.NewCache(static_cast<int64_t>(prompt.size()));
  if (!cache.ok()) return testing::AssertionFailure() << cache.status().ToString();
  auto logits = fp32.Forward(prompt, *cache);
  if (!logits.ok()) return testing::AssertionFailure() << logits.status().ToString();
  const float x = (*logits)[a[step]], y = (*logits)[b[step]];
  const std::string where = fmt::format("step {} of {}: {} vs {}, float32 logits {:.5f} vs {:.5f}",
                                        step, a.size(), a[step], b[step], x, y);
  if (std::abs(x - y) < 0.01f * std::max(std::abs(x), std::abs(y))) {
    std::printf("near-tie broken by precision at %s\n", where.c_str());
    return testing::AssertionSuccess();
  }
  return testing::AssertionFailure() << "continuations part at " << where;
}

// How many leading tokens transformers' float32 and bfloat16 continuations share: past that
// point the greedy choice is a near-tie that the precision decides, in transformers itself.
size_t StablePrefix(const nlohmann::json& c) {
  const auto a = c["float32"].get<std::vector<int32_t>>();
  const auto b = c["bfloat16"].get<std::vector<int32_t>>();
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

// Our continuation must equal the `reference` one token for token: all of it for float32 (the
// CPU backend computes in float32 too); for bfloat16, up to the point where transformers' own
// float32 and bfloat16 runs part, and before that up to a near-tie (SameUntilNearTie).
void ExpectGenerationsMatch(Device device, const char* reference) {
  auto model = Model::Load(kModelDir, device);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto fp32 = Model::Load(kModelDir, Device::kCpu);  // judges where continuations part
  ASSERT_TRUE(fp32.ok()) << fp32.status().ToString();
  const auto golden = Golden();
  const int64_t n = golden["new_tokens"].get<int64_t>();
  ASSERT_GE(golden["cases"].size(), 8u);
  int whole = 0;
  for (const auto& c : golden["cases"]) {
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    auto want = c[reference].get<std::vector<int32_t>>();
    auto got = Greedy(**model, prompt, n);
    if (std::string(reference) != "float32") {
      const size_t stable = StablePrefix(c);
      want.resize(stable);
      got.resize(std::min(got.size(), stable));
    }
    whole += static_cast<int64_t>(want.size()) == n;
    if (std::string(reference) == "float32") {
      EXPECT_EQ(got, want) << "prompt: " << c["prompt"].get<std::string>().substr(0, 80);
    } else {
      EXPECT_TRUE(SameUntilNearTie(**fp32, prompt, want, got))
          << "prompt: " << c["prompt"].get<std::string>().substr(0, 80);
    }
  }
  std::printf("%d of %zu cases compared over all %lld tokens\n", whole, golden["cases"].size(),
              static_cast<long long>(n));
}

TEST(TinyModel, ConfigIsTheShippedLlama) {
  auto model = Model::Load(kModelDir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const ModelConfig& c = (*model)->config();
  EXPECT_EQ(c.vocab_size, 8000);
  EXPECT_EQ(c.num_layers, 10);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_TRUE(c.tie_word_embeddings);
}

TEST(TinyModel, TokenizerMatchesTheOneTransformersRanWith) {
  auto tokenizer = Tokenizer::Load(kModelDir + "/tokenizer.model");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
  const auto golden = Golden();
  for (const auto& c : golden["cases"]) {
    auto ids = (*tokenizer)->Encode(c["prompt"].get<std::string>());
    ASSERT_TRUE(ids.ok());
    ids->insert(ids->begin(), (*tokenizer)->bos_id());
    EXPECT_EQ(*ids, c["prompt_ids"].get<std::vector<int32_t>>());
  }
}

TEST(TinyModel, CpuGreedyGenerationsEqualTransformersFloat32) {
  ExpectGenerationsMatch(Device::kCpu, "float32");
}

TEST(TinyModel, CudaGreedyGenerationsEqualTransformersBfloat16) {
  if (!kernels::CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU";
  ExpectGenerationsMatch(Device::kCuda, "bfloat16");
}

TEST(TinyModel, CpuAndCudaGenerateTheSameTokens) {
  if (!kernels::CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU";
  auto cpu = Model::Load(kModelDir, Device::kCpu);
  auto cuda = Model::Load(kModelDir, Device::kCuda);
  ASSERT_TRUE(cpu.ok() && cuda.ok());
  const auto golden = Golden();
  for (const auto& c : golden["cases"]) {
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const size_t stable = StablePrefix(c);
    auto on_cpu = Greedy(**cpu, prompt, 64), on_cuda = Greedy(**cuda, prompt, 64);
    on_cpu.resize(stable);
    on_cuda.resize(std::min(on_cuda.size(), stable));
    EXPECT_TRUE(SameUntilNearTie(**cpu, prompt, on_cpu, on_cuda))
        << "prompt: " << c["prompt"].get<std::string>().substr(0, 80);
  }
}

}  // namespace
}  // namespace kvcomm::runtime
