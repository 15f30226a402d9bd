#include "agents/runtime/model_config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>
#include <sstream>

namespace kvcomm::runtime {
namespace {

using nlohmann::json;

template <typename T>
Status Read(const json& j, const char* key, T* out, bool required, const std::string& origin) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return InvalidArgument("{}: missing '{}'", origin, key);
    return Status::Ok();
  }
  try {
    *out = it->get<T>();
  } catch (const json::exception&) {
    return InvalidArgument("{}: '{}' has the wrong type ({})", origin, key, it->dump());
  }
  return Status::Ok();
}

}  // namespace

Result<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return InvalidArgument("cannot read model config '{}'", path);
  std::stringstream text;
  text << in.rdbuf();
  return FromJson(text.str(), path);
}

Result<ModelConfig> ModelConfig::FromJson(const std::string& text, const std::string& origin) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("{}: not a JSON object", origin);
  ModelConfig c;
  KVCOMM_RETURN_IF_ERROR(Read(j, "model_type", &c.model_type, true, origin));
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2") {
    return InvalidArgument("{}: model_type '{}' is not supported (llama, mistral, qwen2)", origin,
                           c.model_type);
  }
  c.attention_bias = c.model_type == "qwen2";
  KVCOMM_RETURN_IF_ERROR(Read(j, "vocab_size", &c.vocab_size, true, origin));
  KVCOMM_RETURN_IF_ERROR(Read(j, "hidden_size", &c.hidden_size, true, origin));
  KVCOMM_RETURN_IF_ERROR(Read(j, "intermediate_size", &c.intermediate_size, true, origin));
  KVCOMM_RETURN_IF_ERROR(Read(j, "num_hidden_layers", &c.num_layers, true, origin));
  KVCOMM_RETURN_IF_ERROR(Read(j, "num_attention_heads", &c.num_heads, true, origin));
  c.num_kv_heads = c.num_heads;
  KVCOMM_RETURN_IF_ERROR(Read(j, "num_key_value_heads", &c.num_kv_heads, false, origin));
  c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  KVCOMM_RETURN_IF_ERROR(Read(j, "head_dim", &c.head_dim, false, origin));
  KVCOMM_RETURN_IF_ERROR(
      Read(j, "max_position_embeddings", &c.max_position_embeddings, false, origin));
  KVCOMM_RETURN_IF_ERROR(Read(j, "rms_norm_eps", &c.rms_norm_eps, false, origin));
  KVCOMM_RETURN_IF_ERROR(Read(j, "rope_theta", &c.rope_theta, false, origin));
  KVCOMM_RETURN_IF_ERROR(Read(j, "tie_word_embeddings", &c.tie_word_embeddings, false, origin));
  if (c.model_type != "qwen2") {
    KVCOMM_RETURN_IF_ERROR(Read(j, "attention_bias", &c.attention_bias, false, origin));
  }
  if (j.contains("mlp_bias") && j["mlp_bias"].is_boolean() && j["mlp_bias"].get<bool>()) {
    return InvalidArgument("{}: mlp_bias = true is not supported", origin);
  }
  if (j.contains("hidden_act") && j["hidden_act"] != "silu") {
    return InvalidArgument("{}: hidden_act {} is not supported (silu)", origin,
                           j["hidden_act"].dump());
  }
  if (j.contains("sliding_window") && !j["sliding_window"].is_null() &&
      j.value("use_sliding_window", c.model_type == "mistral")) {
    return InvalidArgument("{}: sliding-window attention is not supported", origin);
  }
  KVCOMM_RETURN_IF_ERROR(Read(j, "bos_token_id", &c.bos_token_id, false, origin));
  if (auto eos = j.find("eos_token_id"); eos != j.end() && !eos->is_null()) {
    if (eos->is_number_integer()) {
      c.eos_token_ids = {eos->get<int32_t>()};
    } else if (eos->is_array()) {
      for (const auto& id : *eos) {
        if (!id.is_number_integer())
          return InvalidArgument("{}: eos_token_id has a non-integer", origin);
        c.eos_token_ids.push_back(id.get<int32_t>());
      }
    }
  }
  std::string dtype = "bfloat16";  // transformers 5 writes "dtype", earlier ones "torch_dtype"
  KVCOMM_RETURN_IF_ERROR(Read(j, "torch_dtype", &dtype, false, origin));
  KVCOMM_RETURN_IF_ERROR(Read(j, "dtype", &dtype, false, origin));
  if (dtype == "bfloat16")
    c.dtype = DType::kBF16;
  else if (dtype == "float16")
    c.dtype = DType::kF16;
  else if (dtype == "float32")
    c.dtype = DType::kF32;
  else
    return InvalidArgument("{}: torch_dtype '{}' is not supported", origin, dtype);

  if (auto layer_types = j.find("layer_types"); layer_types != j.end() && layer_types->is_array()) {
    for (const auto& type : *layer_types) {
      if (type != "full_attention") {
        return InvalidArgument("{}: layer type {} is not supported (full_attention only)", origin,
                               type.dump());
      }
    }
  }
  // transformers 5 keeps rope_theta and the scaling in "rope_parameters"; earlier versions use
  // top-level "rope_theta" and "rope_scaling".
  auto scaling = j.find("rope_parameters");
  if (scaling != j.end() && scaling->is_object()) {
    KVCOMM_RETURN_IF_ERROR(
        Read(*scaling, "rope_theta", &c.rope_theta, false, origin + " rope_parameters"));
  } else {
    scaling = j.find("rope_scaling");
  }
  if (scaling != j.end() && !scaling->is_null()) {
    if (!scaling->is_object()) return InvalidArgument("{}: rope_scaling is not an object", origin);
    std::string type = "default";
    KVCOMM_RETURN_IF_ERROR(Read(*scaling, "type", &type, false, origin + " rope scaling"));
    KVCOMM_RETURN_IF_ERROR(Read(*scaling, "rope_type", &type, false, origin + " rope scaling"));
    if (type != "default") {
      if (type != "linear" && type != "llama3") {
        return InvalidArgument("{}: rope_scaling type '{}' is not supported (linear, llama3)",
                               origin, type);
      }
      c.rope_scaling.type = type;
      const std::string where = origin + " rope scaling";
      KVCOMM_RETURN_IF_ERROR(Read(*scaling, "factor", &c.rope_scaling.factor, true, where));
      if (type == "llama3") {
        KVCOMM_RETURN_IF_ERROR(
            Read(*scaling, "low_freq_factor", &c.rope_scaling.low_freq_factor, true, where));
        KVCOMM_RETURN_IF_ERROR(
            Read(*scaling, "high_freq_factor", &c.rope_scaling.high_freq_factor, true, where));
        KVCOMM_RETURN_IF_ERROR(Read(*scaling, "original_max_position_embeddings",
                                    &c.rope_scaling.original_max_position_embeddings, true, where));
      }
    }
  }
  KVCOMM_RETURN_IF_ERROR(c.Validate().WithContext(origin));
  return c;
}

Status ModelConfig::Validate() const {
  auto positive = [](const char* name, int64_t v, int64_t max) -> Status {
    if (v <= 0 || v > max) return InvalidArgument("{} is {}, must be in 1..{}", name, v, max);
    return Status::Ok();
  };
  KVCOMM_RETURN_IF_ERROR(positive("vocab_size", vocab_size, 1 << 22));
  KVCOMM_RETURN_IF_ERROR(positive("hidden_size", hidden_size, 1 << 16));
  KVCOMM_RETURN_IF_ERROR(positive("intermediate_size", intermediate_size, 1 << 18));
  KVCOMM_RETURN_IF_ERROR(positive("num_hidden_layers", num_layers, 1024));
  KVCOMM_RETURN_IF_ERROR(positive("num_attention_heads", num_heads, 1024));
  KVCOMM_RETURN_IF_ERROR(positive("num_key_value_heads", num_kv_heads, 1024));
  KVCOMM_RETURN_IF_ERROR(positive("head_dim", head_dim, 4096));
  KVCOMM_RETURN_IF_ERROR(positive("max_position_embeddings", max_position_embeddings, 1 << 24));
  if (num_heads % num_kv_heads != 0) {
    return InvalidArgument("num_attention_heads {} is not a multiple of num_key_value_heads {}",
                           num_heads, num_kv_heads);
  }
  if (head_dim % 2 != 0) return InvalidArgument("head_dim {} must be even for RoPE", head_dim);
  if (!(rope_theta > 0)) return InvalidArgument("rope_theta must be positive");
  if (!(rms_norm_eps > 0)) return InvalidArgument("rms_norm_eps must be positive");
  if (!rope_scaling.type.empty() && !(rope_scaling.factor > 0)) {
    return InvalidArgument("rope_scaling factor must be positive");
  }
  return Status::Ok();
}

std::vector<float> ModelConfig::RopeInverseFrequencies() const {
  const int64_t half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    // Computed as Hugging Face does: base ** (arange(0, dim, 2) / dim), in float32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    double freq = 1.0 / std::pow(rope_theta, double{exponent});
    if (rope_scaling.type == "linear") {
      freq /= rope_scaling.factor;
    } else if (rope_scaling.type == "llama3") {
      const double old_len = static_cast<double>(rope_scaling.original_max_position_embeddings);
      const double low_wavelen = old_len / rope_scaling.low_freq_factor;
      const double high_wavelen = old_len / rope_scaling.high_freq_factor;
      const double wavelen = 2 * std::numbers::pi / freq;
      if (wavelen > low_wavelen) {
        freq /= rope_scaling.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_len / wavelen - rope_scaling.low_freq_factor) /
                              (rope_scaling.high_freq_factor - rope_scaling.low_freq_factor);
        freq = (1 - smooth) * freq / rope_scaling.factor + smooth * freq;
      }
    }
    inv_freq[i] = static_cast<float>(freq);
  }
  return inv_freq;
}

ModelArchitecture ModelConfig::Architecture() const {
  std::string scaling;
  if (!rope_scaling.type.empty()) {
    scaling = fmt::format("{}:{}:{}:{}:{}", rope_scaling.type, rope_scaling.factor,
                          rope_scaling.low_freq_factor, rope_scaling.high_freq_factor,
                          rope_scaling.original_max_position_embeddings);
  }
  return ModelArchitecture{model_type,
                           static_cast<uint32_t>(num_layers),
                           static_cast<uint32_t>(num_heads),
                           static_cast<uint32_t>(num_kv_heads),
                           static_cast<uint32_t>(head_dim),
                           rope_theta,
                           scaling,
                           dtype};
}

}  // namespace kvcomm::runtime
