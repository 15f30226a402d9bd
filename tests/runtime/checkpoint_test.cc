// Checkpoints written the Hugging Face way: loading, the errors a broken one gives, and
// kvcomm-generate end to end on CPU (random weights + a sentencepiece tokenizer trained here).
#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "agents/runtime/model.h"
#include "common/safetensors.h"
#include "tests/kvstore/test_segments.h"

namespace kvcomm::runtime {
namespace {

const char* kConfig =
    R"({"model_type": "llama", "vocab_size": 400, "hidden_size": 32, "intermediate_size": 64,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "torch_dtype": "bfloat16",
  "bos_token_id": 1, "eos_token_id": 2, "max_position_embeddings": 256})";

// Writes config.json and model.safetensors (bf16); `skip` / `reshape` damage one tensor.
void WriteCheckpoint(const std::string& dir, const std::string& skip = "",
                     const std::string& reshape = "") {
  auto config = ModelConfig::FromJson(kConfig, "test");
  ASSERT_TRUE(config.ok());
  std::ofstream(dir + "/config.json") << kConfig;
  ModelWeights w = RandomWeights(*config, 11);
  struct Named {
    std::string name;
    const std::vector<float>* values;
    std::vector<uint64_t> shape;
  };
  const uint64_t hidden = 32, kv_dim = 16, inter = 64, vocab = 400;
  std::vector<Named> named = {{"model.embed_tokens.weight", &w.embed, {vocab, hidden}},
                              {"model.norm.weight", &w.final_norm, {hidden}},
                              {"lm_head.weight", &w.lm_head, {vocab, hidden}}};
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const LayerWeights& l = w.layers[i];
    named.push_back({p + "input_layernorm.weight", &l.input_norm, {hidden}});
    named.push_back({p + "self_attn.q_proj.weight", &l.q, {hidden, hidden}});
    named.push_back({p + "self_attn.k_proj.weight", &l.k, {kv_dim, hidden}});
    named.push_back({p + "self_attn.v_proj.weight", &l.v, {kv_dim, hidden}});
    named.push_back({p + "self_attn.o_proj.weight", &l.o, {hidden, hidden}});
    named.push_back({p + "post_attention_layernorm.weight", &l.post_norm, {hidden}});
    named.push_back({p + "mlp.gate_proj.weight", &l.gate, {inter, hidden}});
    named.push_back({p + "mlp.up_proj.weight", &l.up, {inter, hidden}});
    named.push_back({p + "mlp.down_proj.weight", &l.down, {hidden, inter}});
  }
  std::vector<std::vector<uint16_t>> storage;
  std::vector<SafetensorsInput> tensors;
  storage.reserve(named.size());
  for (const auto& t : named) {
    if (t.name == skip) continue;
    auto& bits = storage.emplace_back(t.values->size());
    for (size_t i = 0; i < bits.size(); ++i) bits[i] = FloatToBFloat16((*t.values)[i]);
    std::vector<uint64_t> shape = t.shape;
    if (t.name == reshape) shape = {shape[0] * 2, shape[1] / 2};
    tensors.push_back({t.name, DType::kBF16, shape, std::as_bytes(std::span(bits))});
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}}).ok());
}

TEST(Checkpoint, LoadsAndMissingOrMisshapenTensorsAreNamed) {
  const std::string dir = kvcomm::testing::TempDir("ckpt");
  WriteCheckpoint(dir);
  auto model = Model::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto again = Model::Load(dir);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*model)->fingerprint(), (*again)->fingerprint());

  WriteCheckpoint(dir, "model.layers.1.mlp.up_proj.weight");
  auto missing = Model::Load(dir);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("model.layers.1.mlp.up_proj.weight"),
            std::string::npos);

  WriteCheckpoint(dir, "", "model.layers.0.self_attn.k_proj.weight");
  auto misshapen = Model::Load(dir);
  ASSERT_FALSE(misshapen.ok());
  EXPECT_NE(misshapen.status().message().find("k_proj"), std::string::npos)
      << misshapen.status().ToString();

  std::filesystem::remove(dir + "/model.safetensors");
  EXPECT_NE(Model::Load(dir).status().message().find("model.safetensors"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Checkpoint, KvcommGenerateRunsOnCpuOutOfTheBox) {
  const std::string dir = kvcomm::testing::TempDir("generate");
  WriteCheckpoint(dir);
  {
    std::ofstream corpus(dir + "/corpus.txt");
    for (int i = 0; i < 300; ++i)
      corpus << "The reviewer checks agent " << i << " and reports the shared cache.\n";
  }
  auto trained = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + dir + "/corpus.txt --model_prefix=" + dir +
      "/tokenizer --vocab_size=400 --model_type=bpe "
      "--byte_fallback=true --minloglevel=2");
  ASSERT_TRUE(trained.ok()) << trained.ToString();
  const std::string command = std::string(KVCOMM_GENERATE_BIN) + " --model " + dir +
                              " --prompt 'The reviewer' --max-new-tokens 8 --stats 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("TTFT"), std::string::npos) << output;
  EXPECT_NE(output.find("tokens/s"), std::string::npos) << output;

  const std::string bad =
      std::string(KVCOMM_GENERATE_BIN) + " --model " + dir + "/nope --prompt x 2>&1";
  pipe = ::popen(bad.c_str(), "r");
  output.clear();
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  EXPECT_NE(::pclose(pipe), 0);
  EXPECT_NE(output.find("config.json"), std::string::npos) << output;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvcomm::runtime
