// The mixed-precision codec of MiKV (codec.h): kept tokens in the row dtype, the others
// quantized per token instead of dropped.
#include <cassert>
#include <numeric>

#include "kernels/compress.h"
#include "kvstore/compress/codec.h"
#include "kvstore/compress/internal/byte_io.h"

namespace kvcomm::kvstore::compress {
namespace {

constexpr size_t kMixedHeader = 4 + 8 * 4;

uint64_t QuantizedRowBytes(const KvLayout& l, const MixedParams& p) {
  return l.head_dim * p.bits / 8 + (l.head_dim / p.group) * 8;  // codes + scale and zero
}

}  // namespace

uint64_t MixedBytes(const KvLayout& l, uint64_t kept, const MixedParams& p) {
  const uint64_t heads = uint64_t{l.num_layers} * l.kv_heads, total = heads * l.tokens;
  return kMixedHeader + 4 * heads + kept * (4 + 2ull * l.head_dim * DTypeSize(l.dtype)) +
         (total - kept) * 2 * QuantizedRowBytes(l, p);
}

std::vector<std::byte> EncodeMixed(const KvLayout& l, std::span<const float> kv,
                                   std::span<const uint32_t> counts,
                                   std::span<const int32_t> indices, const MixedParams& p) {
  assert(kv.size() == uint64_t{l.num_layers} * 2 * l.ElementsPerHalf());
  assert(l.head_dim % p.group == 0 && p.group * p.bits % 8 == 0);
  const uint64_t kept_total = std::accumulate(counts.begin(), counts.end(), 0ull);
  internal::Writer w(MixedBytes(l, kept_total, p));
  internal::WriteLayout(w, "KVMX", l);
  w.U32(static_cast<uint32_t>(p.bits));
  w.U32(static_cast<uint32_t>(p.group));
  for (uint32_t c : counts) w.U32(c);
  const int64_t T = l.tokens, D = l.head_dim, groups_per_row = D / p.group;
  std::vector<float> rows, scale, zero;
  std::vector<uint8_t> codes;
  std::vector<bool> kept(T);
  size_t at = 0;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer)
    for (uint32_t h = 0; h < l.kv_heads; ++h) {
      const uint32_t c = counts[layer * l.kv_heads + h];
      const float* k = kv.data() + (uint64_t{layer} * 2 * l.kv_heads + h) * T * D;
      const float* v = k + uint64_t{l.kv_heads} * T * D;
      std::fill(kept.begin(), kept.end(), false);
      w.Bytes(indices.data() + at, c * 4ull);
      for (const float* half : {k, v})
        for (uint32_t j = 0; j < c; ++j) w.Rows(half + indices[at + j] * D, D, l.dtype);
      for (uint32_t j = 0; j < c; ++j) kept[indices[at + j]] = true;
      at += c;
      for (const float* half : {k, v}) {
        rows.clear();
        for (int64_t t = 0; t < T; ++t)
          if (!kept[t]) rows.insert(rows.end(), half + t * D, half + (t + 1) * D);
        const int64_t groups = static_cast<int64_t>(rows.size()) / p.group;
        codes.assign(groups * p.group * p.bits / 8, 0);
        scale.resize(groups);
        zero.resize(groups);
        kernels::cpu::QuantizeGroups(rows.data(), groups, p.group, p.bits, codes.data(),
                                     scale.data(), zero.data());
        // Per evicted token: its codes, then its groups' scales and zeros.
        const int64_t row_code_bytes = D * p.bits / 8;
        for (int64_t e = 0; e < groups / groups_per_row; ++e) {
          w.Bytes(codes.data() + e * row_code_bytes, row_code_bytes);
          w.Bytes(scale.data() + e * groups_per_row, groups_per_row * 4);
          w.Bytes(zero.data() + e * groups_per_row, groups_per_row * 4);
        }
      }
    }
  return w.Take();
}

Result<MixedDecoded> DecodeMixed(std::span<const std::byte> bytes) {
  internal::Reader r(bytes);
  MixedDecoded out;
  KVCOMM_ASSIGN_OR_RETURN(out.layout, internal::ReadLayout(r, "KVMX", "mixed"));
  const KvLayout& l = out.layout;
  uint32_t bits = 0, group = 0;
  if (!r.U32(bits) || !r.U32(group) || (bits != 2 && bits != 4 && bits != 8) || group == 0 ||
      group * bits % 8 != 0 || l.head_dim % group != 0)
    return Error(ErrorCode::kDataLoss, "mixed segment parameters are damaged");
  out.params = {static_cast<int>(bits), group};
  out.counts.resize(uint64_t{l.num_layers} * l.kv_heads);
  uint64_t kept_total = 0;
  for (auto& c : out.counts) {
    if (!r.U32(c) || c > l.tokens)
      return Error(ErrorCode::kDataLoss, "mixed counts are truncated or exceed the tokens");
    kept_total += c;
  }
  if (MixedBytes(l, kept_total, out.params) != bytes.size())
    return Error(ErrorCode::kDataLoss, "mixed segment has {} bytes, its header says {}",
                 bytes.size(), MixedBytes(l, kept_total, out.params));
  const int64_t T = l.tokens, D = l.head_dim, groups_per_row = D / group;
  const int64_t row_code_bytes = D * bits / 8;
  out.indices.resize(kept_total);
  out.kv.resize(uint64_t{l.num_layers} * 2 * l.ElementsPerHalf());
  std::vector<bool> kept(T);
  std::vector<uint8_t> codes(row_code_bytes);
  std::vector<float> scale(groups_per_row), zero(groups_per_row);
  size_t at = 0;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer)
    for (uint32_t h = 0; h < l.kv_heads; ++h) {
      const uint32_t c = out.counts[layer * l.kv_heads + h];
      float* k = out.kv.data() + (uint64_t{layer} * 2 * l.kv_heads + h) * T * D;
      float* v = k + uint64_t{l.kv_heads} * T * D;
      r.Bytes(out.indices.data() + at, c * 4ull);
      std::fill(kept.begin(), kept.end(), false);
      for (uint32_t j = 0; j < c; ++j) {
        const int32_t t = out.indices[at + j];
        if (t < 0 || t >= T || (j > 0 && t <= out.indices[at + j - 1]))
          return Error(ErrorCode::kDataLoss, "mixed indices are not ascending in range");
        kept[t] = true;
      }
      for (float* half : {k, v})
        for (uint32_t j = 0; j < c; ++j) r.Rows(half + out.indices[at + j] * D, D, l.dtype);
      at += c;
      for (float* half : {k, v})
        for (int64_t t = 0; t < T; ++t) {
          if (kept[t]) continue;
          r.Bytes(codes.data(), row_code_bytes);
          r.Bytes(scale.data(), groups_per_row * 4);
          r.Bytes(zero.data(), groups_per_row * 4);
          kernels::cpu::DequantizeGroups(codes.data(), scale.data(), zero.data(), groups_per_row,
                                         group, static_cast<int>(bits), half + t * D);
        }
    }
  return out;
}

}  // namespace kvcomm::kvstore::compress
