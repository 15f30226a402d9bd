#include "kvstore/compress/codec.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <numeric>

#include "kernels/compress.h"
#include "kvstore/compress/internal/byte_io.h"

namespace kvcomm::kvstore::compress {
namespace {

using internal::Reader;
using internal::ReadLayout;
using internal::WriteLayout;
using internal::Writer;

constexpr size_t kSubsetHeader = 4 + 6 * 4;
constexpr size_t kKiviHeader = 4 + 9 * 4;

}  // namespace

uint64_t TokenSubset::kept() const { return std::accumulate(counts.begin(), counts.end(), 0ull); }

uint64_t TokenSubsetBytes(const KvLayout& layout, uint64_t kept) {
  return kSubsetHeader + 4ull * layout.num_layers * layout.kv_heads +
         kept * (4 + 2ull * layout.head_dim * DTypeSize(layout.dtype));
}

std::vector<std::byte> EncodeTokenSubset(const TokenSubset& s) {
  const uint64_t kept = s.kept();
  assert(s.indices.size() == kept && s.keys.size() == kept * s.layout.head_dim);
  Writer w(TokenSubsetBytes(s.layout, kept));
  WriteLayout(w, "KVTS", s.layout);
  for (uint32_t c : s.counts) w.U32(c);
  const size_t d = s.layout.head_dim;
  size_t at = 0;
  for (uint32_t c : s.counts) {
    w.Bytes(s.indices.data() + at, c * 4ull);
    w.Rows(s.keys.data() + at * d, c * d, s.layout.dtype);
    w.Rows(s.values.data() + at * d, c * d, s.layout.dtype);
    at += c;
  }
  return w.Take();
}

Result<TokenSubset> DecodeTokenSubset(std::span<const std::byte> bytes) {
  Reader r(bytes);
  TokenSubset s;
  KVCOMM_ASSIGN_OR_RETURN(s.layout, ReadLayout(r, "KVTS", "token-subset"));
  s.counts.resize(uint64_t{s.layout.num_layers} * s.layout.kv_heads);
  uint64_t kept = 0;
  for (auto& c : s.counts) {
    if (!r.U32(c) || c > s.layout.tokens)
      return Error(ErrorCode::kDataLoss, "token-subset counts are truncated or exceed the tokens");
    kept += c;
  }
  if (TokenSubsetBytes(s.layout, kept) != bytes.size())
    return Error(ErrorCode::kDataLoss, "token-subset segment has {} bytes, its header says {}",
                 bytes.size(), TokenSubsetBytes(s.layout, kept));
  const size_t d = s.layout.head_dim;
  s.indices.resize(kept);
  s.keys.resize(kept * d);
  s.values.resize(kept * d);
  size_t at = 0;
  for (uint32_t c : s.counts) {
    r.Bytes(s.indices.data() + at, c * 4ull);
    for (uint32_t j = 0; j < c; ++j) {
      const int32_t t = s.indices[at + j];
      if (t < 0 || t >= static_cast<int32_t>(s.layout.tokens) ||
          (j > 0 && t <= s.indices[at + j - 1]))
        return Error(ErrorCode::kDataLoss, "token-subset indices are not ascending in range");
    }
    r.Rows(s.keys.data() + at * d, c * d, s.layout.dtype);
    r.Rows(s.values.data() + at * d, c * d, s.layout.dtype);
    at += c;
  }
  return s;
}

int64_t KiviQuantizedTokens(const KvLayout& layout, const KiviParams& p) {
  const int64_t quantizable = std::max<int64_t>(0, int64_t{layout.tokens} - p.residual);
  return quantizable / p.group * p.group;
}

uint64_t KiviBytes(const KvLayout& l, const KiviParams& p) {
  const uint64_t q = KiviQuantizedTokens(l, p), full = l.tokens - q;
  const uint64_t per_head = 2 * q * l.head_dim * p.bits / 8   // codes, keys and values
                            + (q / p.group) * l.head_dim * 8  // key groups: scale + zero
                            + (q * l.head_dim / p.group) * 8  // value groups
                            + 2 * full * l.head_dim * DTypeSize(l.dtype);  // the residual window
  return kKiviHeader + uint64_t{l.num_layers} * l.kv_heads * per_head;
}

std::vector<std::byte> EncodeKivi(const KvLayout& l, std::span<const float> kv,
                                  const KiviParams& p) {
  assert(kv.size() == uint64_t{l.num_layers} * 2 * l.ElementsPerHalf());
  assert(l.head_dim % p.group == 0 && p.group * p.bits % 8 == 0);
  const int64_t q = KiviQuantizedTokens(l, p), T = l.tokens, D = l.head_dim;
  Writer w(KiviBytes(l, p));
  WriteLayout(w, "KVKV", l);
  for (uint32_t v :
       {static_cast<uint32_t>(p.bits), static_cast<uint32_t>(p.group), static_cast<uint32_t>(q)})
    w.U32(v);
  std::vector<float> channel_major(q * D), scale, zero;
  std::vector<uint8_t> codes;
  auto quantize = [&](const float* x, int64_t groups) {
    codes.assign(groups * p.group * p.bits / 8, 0);
    scale.resize(groups);
    zero.resize(groups);
    kernels::cpu::QuantizeGroups(x, groups, p.group, p.bits, codes.data(), scale.data(),
                                 zero.data());
    w.Bytes(codes.data(), codes.size());
    w.Bytes(scale.data(), groups * 4);
    w.Bytes(zero.data(), groups * 4);
  };
  for (uint32_t layer = 0; layer < l.num_layers; ++layer)
    for (uint32_t h = 0; h < l.kv_heads; ++h) {
      const float* k = kv.data() + l.Offset(layer, 0, h, 0) / DTypeSize(l.dtype);
      const float* v = kv.data() + l.Offset(layer, 1, h, 0) / DTypeSize(l.dtype);
      // Keys per channel: each channel's values over `group` consecutive tokens are a group.
      for (int64_t g = 0; g < q / p.group; ++g)
        for (int64_t d = 0; d < D; ++d)
          for (int64_t i = 0; i < p.group; ++i)
            channel_major[(g * D + d) * p.group + i] = k[(g * p.group + i) * D + d];
      quantize(channel_major.data(), q / p.group * D);
      quantize(v, q * D / p.group);  // values per token: runs of `group` channels
      w.Rows(k + q * D, (T - q) * D, l.dtype);
      w.Rows(v + q * D, (T - q) * D, l.dtype);
    }
  return w.Take();
}

Result<KiviDecoded> DecodeKivi(std::span<const std::byte> bytes) {
  Reader r(bytes);
  KiviDecoded out;
  KVCOMM_ASSIGN_OR_RETURN(out.layout, ReadLayout(r, "KVKV", "kivi"));
  const KvLayout& l = out.layout;
  uint32_t bits = 0, group = 0, q = 0;
  if (!r.U32(bits) || !r.U32(group) || !r.U32(q) || (bits != 2 && bits != 4 && bits != 8) ||
      group == 0 || group * bits % 8 != 0 || l.head_dim % group != 0 || q % group != 0 ||
      q > l.tokens)
    return Error(ErrorCode::kDataLoss, "kivi segment parameters are damaged");
  out.params = {static_cast<int>(bits), group, int64_t{l.tokens} - q};
  if (KiviQuantizedTokens(l, out.params) != q || KiviBytes(l, out.params) != bytes.size())
    return Error(ErrorCode::kDataLoss, "kivi segment has {} bytes, its header says {}",
                 bytes.size(), KiviBytes(l, out.params));
  const int64_t T = l.tokens, D = l.head_dim;
  out.kv.resize(uint64_t{l.num_layers} * 2 * l.ElementsPerHalf());
  std::vector<float> channel_major(q * D), scale, zero;
  std::vector<uint8_t> codes;
  auto dequantize = [&](float* x, int64_t groups) {
    codes.resize(groups * group * bits / 8);
    scale.resize(groups);
    zero.resize(groups);
    r.Bytes(codes.data(), codes.size());
    r.Bytes(scale.data(), groups * 4);
    r.Bytes(zero.data(), groups * 4);
    kernels::cpu::DequantizeGroups(codes.data(), scale.data(), zero.data(), groups, group,
                                   static_cast<int>(bits), x);
  };
  const size_t elem = DTypeSize(l.dtype);
  for (uint32_t layer = 0; layer < l.num_layers; ++layer)
    for (uint32_t h = 0; h < l.kv_heads; ++h) {
      float* k = out.kv.data() + l.Offset(layer, 0, h, 0) / elem;
      float* v = out.kv.data() + l.Offset(layer, 1, h, 0) / elem;
      dequantize(channel_major.data(), q / group * D);
      for (int64_t g = 0; g < q / group; ++g)
        for (int64_t d = 0; d < D; ++d)
          for (int64_t i = 0; i < group; ++i)
            k[(g * group + i) * D + d] = channel_major[(g * D + d) * group + i];
      dequantize(v, q * D / group);
      r.Rows(k + q * D, (T - q) * D, l.dtype);
      r.Rows(v + q * D, (T - q) * D, l.dtype);
    }
  return out;
}

}  // namespace kvcomm::kvstore::compress
