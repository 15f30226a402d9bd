#include "common/keys.h"

namespace kvcomm {
namespace {

std::span<const std::byte> TokenBytes(std::span<const int32_t> tokens) {
  return std::as_bytes(tokens);
}

}  // namespace

ModelFingerprint ComputeModelFingerprint(const ModelArchitecture& arch,
                                         const Hash128& weights_hash) {
  Hasher128 h;
  h.AddString("kvcomm.model.v1")
      .AddString(arch.family)
      .AddU64(arch.num_layers)
      .AddU64(arch.num_heads)
      .AddU64(arch.kv_heads)
      .AddU64(arch.head_dim)
      .AddDouble(arch.rope_theta)
      .AddString(arch.rope_scaling)
      .AddU64(static_cast<uint64_t>(arch.dtype))
      .AddHash(weights_hash);
  return h.Finish();
}

ModelFingerprint FingerprintFromShape(uint32_t num_layers, uint32_t kv_heads, uint32_t head_dim,
                                      DType dtype) {
  Hasher128 h;
  h.AddString("kvcomm.shape.v1")
      .AddU64(num_layers)
      .AddU64(kv_heads)
      .AddU64(head_dim)
      .AddU64(static_cast<uint64_t>(dtype));
  return h.Finish();
}

Hash128 TokenPrefixHash(std::span<const int32_t> preceding_tokens) {
  if (preceding_tokens.empty()) return {};
  Hasher128 h;
  h.AddString("kvcomm.prefix.v1").AddBytes(TokenBytes(preceding_tokens));
  return h.Finish();
}

SegmentKey ComputeContextKey(const ModelFingerprint& model, std::string_view name_space,
                             const Hash128& prefix_hash, std::span<const int32_t> token_ids) {
  Hasher128 h;
  h.AddString("kvcomm.context.v1")
      .AddHash(model)
      .AddString(name_space)
      .AddHash(prefix_hash)
      .AddBytes(TokenBytes(token_ids));
  return h.Finish();
}

SegmentKey ComputeContentKey(const ModelFingerprint& model, std::string_view name_space,
                             std::span<const int32_t> token_ids) {
  Hasher128 h;
  h.AddString("kvcomm.content.v1")
      .AddHash(model)
      .AddString(name_space)
      .AddBytes(TokenBytes(token_ids));
  return h.Finish();
}

SegmentKey ComputeContextKeyFromPayload(const ModelFingerprint& model, std::string_view name_space,
                                        const Hash128& prefix_hash, uint64_t payload_checksum) {
  Hasher128 h;
  h.AddString("kvcomm.context-payload.v1")
      .AddHash(model)
      .AddString(name_space)
      .AddHash(prefix_hash)
      .AddU64(payload_checksum);
  return h.Finish();
}

SegmentKey ComputeContentKeyFromPayload(const ModelFingerprint& model, std::string_view name_space,
                                        uint64_t payload_checksum) {
  Hasher128 h;
  h.AddString("kvcomm.content-payload.v1")
      .AddHash(model)
      .AddString(name_space)
      .AddU64(payload_checksum);
  return h.Finish();
}

Status ValidateNamespace(std::string_view name_space) {
  if (name_space.empty() || name_space.size() > 128) {
    return InvalidArgument("namespace must have 1..128 characters, got {}", name_space.size());
  }
  for (char c : name_space) {
    bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '.' || c == '_' || c == ':' || c == '-';
    if (!allowed) {
      return InvalidArgument("namespace '{}' has a character outside [A-Za-z0-9._:-]", name_space);
    }
  }
  return Status::Ok();
}

}  // namespace kvcomm
