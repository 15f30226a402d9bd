#include "agents/runtime/weights.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "common/safetensors.h"
#include "kernels/ops.h"

namespace kvcomm::runtime {
namespace {

namespace fs = std::filesystem;

// Resolves tensor names to open shard files.
class TensorSource {
 public:
  static Result<TensorSource> Open(const std::string& dir) {
    TensorSource source;
    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    const fs::path single = fs::path(dir) / "model.safetensors";
    if (fs::exists(index)) {
      std::ifstream in(index);
      std::stringstream text;
      text << in.rdbuf();
      auto j = nlohmann::json::parse(text.str(), nullptr, false);
      if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
        return InvalidArgument("{}: no weight_map object", index.string());
      }
      for (auto& [name, file] : j["weight_map"].items()) {
        if (!file.is_string())
          return InvalidArgument("{}: '{}' maps to a non-string", index.string(), name);
        const std::string shard = file.get<std::string>();
        if (shard.find('/') != std::string::npos) {
          return InvalidArgument("{}: shard name '{}' must be a plain file name", index.string(),
                                 shard);
        }
        source.shard_of_[name] = shard;
        if (!source.files_.count(shard)) {
          KVCOMM_ASSIGN_OR_RETURN(auto opened,
                                  SafetensorsFile::Open((fs::path(dir) / shard).string()));
          source.files_.emplace(shard, std::move(opened));
        }
      }
    } else if (fs::exists(single)) {
      KVCOMM_ASSIGN_OR_RETURN(auto opened, SafetensorsFile::Open(single.string()));
      source.files_.emplace("model.safetensors", std::move(opened));
    } else {
      return InvalidArgument("{}: no model.safetensors or model.safetensors.index.json", dir);
    }
    return source;
  }

  Result<const SafetensorsTensor*> Find(const std::string& name) const {
    std::string shard = shard_of_.count(name) ? shard_of_.at(name) : "model.safetensors";
    auto file = files_.find(shard);
    const SafetensorsTensor* tensor = file == files_.end() ? nullptr : file->second.Find(name);
    if (tensor == nullptr)
      return InvalidArgument("checkpoint is missing tensor '{}' (looked in {})", name, shard);
    return tensor;
  }

 private:
  std::map<std::string, std::string> shard_of_;
  std::map<std::string, SafetensorsFile> files_;
};

class Loader {
 public:
  explicit Loader(const TensorSource& source) : source_(source) {}

  Status Load(const std::string& name, std::vector<uint64_t> shape, std::vector<float>* out) {
    KVCOMM_ASSIGN_OR_RETURN(const SafetensorsTensor* t, source_.Find(name));
    if (t->shape != shape) {
      return InvalidArgument("tensor '{}' has shape [{}], the config needs [{}]", name,
                             fmt::join(t->shape, ", "), fmt::join(shape, ", "));
    }
    if (t->dtype == DType::kI32)
      return InvalidArgument("tensor '{}' is I32, expected a float type", name);
    hasher_.AddString(name).AddBytes(t->data.span());
    uint64_t n = 1;
    for (uint64_t d : shape) n *= d;
    out->resize(n);
    return kernels::ConvertDType(
        {const_cast<std::byte*>(t->data.data()), t->dtype, {static_cast<int64_t>(n)}},
        {out->data(), DType::kF32, {static_cast<int64_t>(n)}});
  }
  Hash128 hash() const { return hasher_.Finish(); }

 private:
  const TensorSource& source_;
  Hasher128 hasher_;
};

}  // namespace

Result<ModelWeights> LoadWeights(const std::string& model_dir, const ModelConfig& c) {
  KVCOMM_ASSIGN_OR_RETURN(TensorSource source, TensorSource::Open(model_dir));
  Loader load(source);
  const uint64_t hidden = c.hidden_size, q_dim = c.num_heads * c.head_dim,
                 kv_dim = c.num_kv_heads * c.head_dim, inter = c.intermediate_size,
                 vocab = c.vocab_size;
  ModelWeights w;
  KVCOMM_RETURN_IF_ERROR(load.Load("model.embed_tokens.weight", {vocab, hidden}, &w.embed));
  w.layers.resize(c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    LayerWeights& l = w.layers[i];
    KVCOMM_RETURN_IF_ERROR(load.Load(p + "input_layernorm.weight", {hidden}, &l.input_norm));
    KVCOMM_RETURN_IF_ERROR(load.Load(p + "self_attn.q_proj.weight", {q_dim, hidden}, &l.q));
    KVCOMM_RETURN_IF_ERROR(load.Load(p + "self_attn.k_proj.weight", {kv_dim, hidden}, &l.k));
    KVCOMM_RETURN_IF_ERROR(load.Load(p + "self_attn.v_proj.weight", {kv_dim, hidden}, &l.v));
    KVCOMM_RETURN_IF_ERROR(load.Load(p + "self_attn.o_proj.weight", {hidden, q_dim}, &l.o));
    if (c.attention_bias) {
      KVCOMM_RETURN_IF_ERROR(load.Load(p + "self_attn.q_proj.bias", {q_dim}, &l.q_bias));
      KVCOMM_RETURN_IF_ERROR(load.Load(p + "self_attn.k_proj.bias", {kv_dim}, &l.k_bias));
      KVCOMM_RETURN_IF_ERROR(load.Load(p + "self_attn.v_proj.bias", {kv_dim}, &l.v_bias));
    }
    KVCOMM_RETURN_IF_ERROR(
        load.Load(p + "post_attention_layernorm.weight", {hidden}, &l.post_norm));
    KVCOMM_RETURN_IF_ERROR(load.Load(p + "mlp.gate_proj.weight", {inter, hidden}, &l.gate));
    KVCOMM_RETURN_IF_ERROR(load.Load(p + "mlp.up_proj.weight", {inter, hidden}, &l.up));
    KVCOMM_RETURN_IF_ERROR(load.Load(p + "mlp.down_proj.weight", {hidden, inter}, &l.down));
  }
  KVCOMM_RETURN_IF_ERROR(load.Load("model.norm.weight", {hidden}, &w.final_norm));
  if (!c.tie_word_embeddings) {
    KVCOMM_RETURN_IF_ERROR(load.Load("lm_head.weight", {vocab, hidden}, &w.lm_head));
  }
  w.content_hash = load.hash();
  return w;
}

ModelWeights RandomWeights(const ModelConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  auto random = [&](uint64_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = normal(rng);
    return v;
  };
  auto ones = [](uint64_t n) { return std::vector<float>(n, 1.0f); };
  const uint64_t hidden = c.hidden_size, q_dim = c.num_heads * c.head_dim,
                 kv_dim = c.num_kv_heads * c.head_dim, inter = c.intermediate_size;
  ModelWeights w;
  w.embed = random(c.vocab_size * hidden);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LayerWeights l;
    l.input_norm = ones(hidden);
    l.q = random(q_dim * hidden);
    l.k = random(kv_dim * hidden);
    l.v = random(kv_dim * hidden);
    l.o = random(hidden * q_dim);
    if (c.attention_bias) {
      l.q_bias = random(q_dim);
      l.k_bias = random(kv_dim);
      l.v_bias = random(kv_dim);
    }
    l.post_norm = ones(hidden);
    l.gate = random(inter * hidden);
    l.up = random(inter * hidden);
    l.down = random(hidden * inter);
    w.layers.push_back(std::move(l));
  }
  w.final_norm = ones(hidden);
  if (!c.tie_word_embeddings) w.lm_head = random(c.vocab_size * hidden);
  Hasher128 h;
  w.content_hash = h.AddString("random").AddU64(seed).Finish();
  return w;
}

}  // namespace kvcomm::runtime
