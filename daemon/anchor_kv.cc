#include "daemon/anchor_kv.h"

#include <cassert>
#include <cstring>
#include <numeric>

#include "kernels/ops.h"
#include "kernels/realign.h"

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

KvF32 PositionFree(const KvF32& kv, int32_t first_position, std::span<const float> inv_freq) {
  const KvLayout& l = kv.layout;
  std::vector<int32_t> from(l.tokens), to(l.tokens, 0);
  std::iota(from.begin(), from.end(), first_position);
  KvF32 out{l, std::vector<float>(kv.data.size())};
  const kernels::RealignShape shape{l.num_layers, l.kv_heads, l.tokens, l.head_dim, 0};
  kernels::cpu::RealignKv(shape, kv.data.data(), from, to, inv_freq, nullptr, nullptr, nullptr,
                          out.data.data());
  return out;
}

KvF32 Subtract(const KvF32& a, const KvF32& b) {
  assert(a.layout == b.layout);
  KvF32 out{a.layout, std::vector<float>(a.data.size())};
  for (size_t i = 0; i < a.data.size(); ++i) out.data[i] = a.data[i] - b.data[i];
  return out;
}

}  // namespace kvcomm::daemon
