#include "agents/client/segment_file.h"

#include <charconv>
#include <cstring>

#include "common/safetensors.h"

namespace kvcomm::client {
namespace {

Result<std::vector<int32_t>> ReadIndexTensor(const SafetensorsFile& file, const std::string& name,
                                             uint32_t tokens, const std::string& path) {
  const SafetensorsTensor* t = file.Find(name);
  if (t == nullptr) return std::vector<int32_t>{};
  if (t->dtype != DType::kI32 || t->shape.size() != 1 || t->shape[0] != tokens) {
    return InvalidArgument("{}: '{}' must be I32 shaped [{}]", path, name, tokens);
  }
  std::vector<int32_t> out(tokens);
  std::memcpy(out.data(), t->data.data(), t->data.size());
  return out;
}

}  // namespace

Result<SegmentFile> ReadSegmentFile(const std::string& path) {
  KVCOMM_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(path));
  const SafetensorsTensor* k = file.Find("k");
  const SafetensorsTensor* v = file.Find("v");
  if (k == nullptr || v == nullptr) {
    return InvalidArgument("{}: a segment file needs tensors 'k' and 'v'", path);
  }
  if (k->shape.size() != 4 || k->shape != v->shape || k->dtype != v->dtype) {
    return InvalidArgument(
        "{}: 'k' and 'v' must have the same dtype and a 4-d shape "
        "[layers, kv_heads, tokens, head_dim]",
        path);
  }
  for (uint64_t d : k->shape) {
    if (d == 0 || d > UINT32_MAX) return InvalidArgument("{}: 'k' has a dimension of {}", path, d);
  }
  SegmentFile out;
  KvLayout& layout = out.segment.layout;
  layout = {static_cast<uint32_t>(k->shape[0]), static_cast<uint32_t>(k->shape[1]),
            static_cast<uint32_t>(k->shape[2]), static_cast<uint32_t>(k->shape[3]), k->dtype};
  KVCOMM_RETURN_IF_ERROR(layout.Validate().WithContext(path));

  // Interleave into [layer][K|V][kv_heads][tokens][head_dim].
  const uint64_t half = layout.ElementsPerHalf() * DTypeSize(layout.dtype);
  std::vector<std::byte> payload(layout.PayloadBytes());
  for (uint32_t layer = 0; layer < layout.num_layers; ++layer) {
    std::memcpy(payload.data() + (2 * layer) * half, k->data.data() + layer * half, half);
    std::memcpy(payload.data() + (2 * layer + 1) * half, v->data.data() + layer * half, half);
  }
  out.segment.payload = Blob::FromVector(std::move(payload));
  KVCOMM_ASSIGN_OR_RETURN(out.segment.token_ids,
                          ReadIndexTensor(file, "token_ids", layout.tokens, path));
  KVCOMM_ASSIGN_OR_RETURN(out.segment.positions,
                          ReadIndexTensor(file, "positions", layout.tokens, path));

  const auto& meta = file.metadata();
  out.fingerprint =
      FingerprintFromShape(layout.num_layers, layout.kv_heads, layout.head_dim, layout.dtype);
  if (auto it = meta.find("fingerprint"); it != meta.end()) {
    KVCOMM_ASSIGN_OR_RETURN(out.fingerprint, Hash128::FromHex(it->second));
  }
  if (auto it = meta.find("namespace"); it != meta.end()) {
    KVCOMM_RETURN_IF_ERROR(ValidateNamespace(it->second).WithContext(path));
    out.name_space = it->second;
  }
  if (auto it = meta.find("prefix_hash"); it != meta.end()) {
    KVCOMM_ASSIGN_OR_RETURN(out.segment.prefix_hash, Hash128::FromHex(it->second));
  }
  if (auto it = meta.find("first_position"); it != meta.end()) {
    const std::string& text = it->second;
    auto [end, ec] =
        std::from_chars(text.data(), text.data() + text.size(), out.segment.first_position);
    if (ec != std::errc() || end != text.data() + text.size()) {
      return InvalidArgument("{}: first_position '{}' is not an integer", path, text);
    }
  }
  return out;
}

Status WriteSegmentFile(const std::string& path, const SegmentData& segment) {
  const KvLayout& layout = segment.info.layout;
  const uint64_t half = layout.ElementsPerHalf() * DTypeSize(layout.dtype);
  std::vector<std::byte> k(half * layout.num_layers), v(half * layout.num_layers);
  for (uint32_t layer = 0; layer < layout.num_layers; ++layer) {
    std::memcpy(k.data() + layer * half, segment.payload.data() + (2 * layer) * half, half);
    std::memcpy(v.data() + layer * half, segment.payload.data() + (2 * layer + 1) * half, half);
  }
  const std::vector<uint64_t> shape = {layout.num_layers, layout.kv_heads, layout.tokens,
                                       layout.head_dim};
  std::vector<SafetensorsInput> tensors = {{"k", layout.dtype, shape, k},
                                           {"v", layout.dtype, shape, v}};
  if (!segment.token_ids.empty()) {
    tensors.push_back(
        {"token_ids", DType::kI32, {layout.tokens}, std::as_bytes(std::span(segment.token_ids))});
  }
  if (!segment.positions.empty()) {
    tensors.push_back(
        {"positions", DType::kI32, {layout.tokens}, std::as_bytes(std::span(segment.positions))});
  }
  std::map<std::string, std::string> metadata = {
      {"fingerprint", segment.info.fingerprint.ToHex()},
      {"namespace", segment.info.name_space},
      {"prefix_hash", segment.prefix_hash.ToHex()},
      {"first_position", std::to_string(segment.info.first_position)},
      {"context_key", segment.info.context_key.ToHex()}};
  return WriteSafetensors(path, tensors, metadata);
}

}  // namespace kvcomm::client
