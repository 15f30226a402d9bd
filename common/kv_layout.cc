#include "common/kv_layout.h"

namespace kvcomm {

Status KvLayout::Validate() const {
  auto check = [](const char* name, uint32_t value, uint32_t max) -> Status {
    if (value == 0 || value > max) {
      return InvalidArgument("{} is {}, must be in 1..{}", name, value, max);
    }
    return Status::Ok();
  };
  KVCOMM_RETURN_IF_ERROR(check("num_layers", num_layers, kMaxLayers));
  KVCOMM_RETURN_IF_ERROR(check("kv_heads", kv_heads, kMaxKvHeads));
  KVCOMM_RETURN_IF_ERROR(check("tokens", tokens, kMaxTokens));
  KVCOMM_RETURN_IF_ERROR(check("head_dim", head_dim, kMaxHeadDim));
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
    return InvalidArgument("KV dtype must be F32, F16 or BF16, got {}", DTypeName(dtype));
  }
  return Status::Ok();
}

std::string KvLayout::ToString() const {
  return fmt::format("[layers={}][K|V][kv_heads={}][tokens={}][head_dim={}] {}", num_layers,
                     kv_heads, tokens, head_dim, DTypeName(dtype));
}

}  // namespace kvcomm
