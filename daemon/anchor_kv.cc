#include "daemon/anchor_kv.h"

#include <cassert>
#include <cstring>

#include "kernels/ops.h"

namespace kvcomm::daemon {

Result<KvF32> DecodeKv(const KvLayout& layout, std::span<const std::byte> payload) {
  if (payload.size() != layout.PayloadBytes()) {
    return Error(ErrorCode::kDataLoss, "segment payload has {} bytes, its layout {} needs {}",
                 payload.size(), layout.ToString(), layout.PayloadBytes());
  }
  KvF32 out{layout, std::vector<float>(payload.size() / DTypeSize(layout.dtype))};
  out.layout.dtype = DType::kF32;
  const int64_t n = static_cast<int64_t>(out.data.size());
  KVCOMM_RETURN_IF_ERROR(
      kernels::ConvertDType({const_cast<std::byte*>(payload.data()), layout.dtype, {n}},
                            {out.data.data(), DType::kF32, {n}}));
  return out;
}

Result<Blob> EncodeKv(const KvF32& kv, DType dtype) {
  std::vector<std::byte> bytes(kv.data.size() * DTypeSize(dtype));
  const int64_t n = static_cast<int64_t>(kv.data.size());
  KVCOMM_RETURN_IF_ERROR(kernels::ConvertDType(
      {const_cast<float*>(kv.data.data()), DType::kF32, {n}}, {bytes.data(), dtype, {n}}));
  return Blob::FromVector(std::move(bytes));
}

KvF32 FirstTokens(const KvF32& kv, uint32_t tokens) {
  assert(tokens <= kv.layout.tokens);
  KvF32 out{kv.layout, {}};
  out.layout.tokens = tokens;
  out.data.resize(out.layout.PayloadBytes() / sizeof(float));
  const uint64_t rows = uint64_t{kv.layout.num_layers} * 2 * kv.layout.kv_heads;
  const uint64_t in_row = uint64_t{kv.layout.tokens} * kv.layout.head_dim;
  const uint64_t out_row = uint64_t{tokens} * kv.layout.head_dim;
  for (uint64_t r = 0; r < rows; ++r) {
    std::memcpy(out.data.data() + r * out_row, kv.data.data() + r * in_row,
                out_row * sizeof(float));
  }
  return out;
}

}  // namespace kvcomm::daemon
