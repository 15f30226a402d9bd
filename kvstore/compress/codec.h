// Codecs of compressed segments, each with an exact byte size known before encoding (so a byte
// budget is met exactly) and a decode, both validated against damaged input.
//
// token-subset: the kept tokens of each (layer, kv head): their indices and K / V rows.
//   "KVTS" u32 version, u32 layers, kv_heads, tokens (of the original), head_dim, dtype;
//   u32 count per (layer, head); then per (layer, head): count i32 indices (ascending), count
//   K rows, count V rows, in dtype. Little-endian.
// kivi: every token; per (layer, head) the first tokens - residual (rounded down to whole
//   groups) quantized: keys per channel over groups of `group` tokens, values per token over
//   groups of `group` channels, fp32 scale and zero per group, codes packed; the rest (the
//   residual window) in dtype.
//   "KVKV" u32 version, layers, kv_heads, tokens, head_dim, dtype, bits, group, quantized tokens.
// mixed (MiKV): every token; per (layer, head) the kept tokens' indices and K / V rows in
//   dtype, then the other tokens (ascending) quantized per token: K codes, then V codes, in
//   groups of `group` channels with fp32 scale and zero per group.
//   "KVMX" u32 version, layers, kv_heads, tokens, head_dim, dtype, bits, group; u32 count per
//   (layer, head); then per (layer, head): indices, K rows, V rows, evicted K codes + scales +
//   zeros, evicted V codes + scales + zeros.
// gear: every token; per (layer, K|V, head) matrix [tokens][head_dim]: the `outliers` largest
//   magnitudes kept exactly (u32 index, f32 value), the rest quantized per token in groups of
//   `group` channels (codes, fp32 scale and zero), and the quantization residual's rank-`rank`
//   approximation A [tokens][rank] B [head_dim][rank] in fp32.
//   "KVGR" u32 version, layers, kv_heads, tokens, head_dim, dtype, bits, group, rank, outliers.
// minicache: layers before `start` as they are (dtype); from `start` on, pairs of adjacent
//   layers share one unit direction per token (SLERP, t = 1/2) with both norms in fp32, except
//   the `retained` tokens of each (pair, K|V, head) whose directions differ most, kept as they
//   are in both layers; an odd last layer as it is.
//   "KVMC" u32 version, layers, kv_heads, tokens, head_dim, dtype, start, retained.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "common/kv_layout.h"

namespace kvcomm::kvstore::compress {

struct TokenSubset {
  KvLayout layout;               // the original segment's shape; dtype = the rows' stored dtype
  std::vector<uint32_t> counts;  // [layer][kv_head]
  std::vector<int32_t> indices;  // per (layer, head) in order, ascending within each
  std::vector<float> keys;       // [sum(counts)][head_dim], in the same order
  std::vector<float> values;
  uint64_t kept() const;
};
uint64_t TokenSubsetBytes(const KvLayout& layout, uint64_t kept);
std::vector<std::byte> EncodeTokenSubset(const TokenSubset& subset);
Result<TokenSubset> DecodeTokenSubset(std::span<const std::byte> bytes);

struct KiviParams {
  int bits = 2;
  int64_t group = 32;
  int64_t residual = 128;
};
// How many leading tokens KIVI quantizes (whole groups, leaving at least `residual`).
int64_t KiviQuantizedTokens(const KvLayout& layout, const KiviParams& params);
uint64_t KiviBytes(const KvLayout& layout, const KiviParams& params);
// `kv` is the segment in fp32 ([layer][K|V][head][token][dim]); layout.dtype is the dtype the
// residual window is kept in.
std::vector<std::byte> EncodeKivi(const KvLayout& layout, std::span<const float> kv,
                                  const KiviParams& params);
// The segment back in fp32 (layout.dtype tells the residual's stored dtype).
struct KiviDecoded {
  KvLayout layout;
  KiviParams params;
  std::vector<float> kv;
};
Result<KiviDecoded> DecodeKivi(std::span<const std::byte> bytes);

struct MixedParams {
  int bits = 2;
  int64_t group = 32;
};
uint64_t MixedBytes(const KvLayout& layout, uint64_t kept, const MixedParams& params);
// `kv` fp32 as above; counts per (layer, head) and the kept indices (ascending per head, in
// order) as a TokenSubset holds them. layout.dtype is the kept rows' dtype.
std::vector<std::byte> EncodeMixed(const KvLayout& layout, std::span<const float> kv,
                                   std::span<const uint32_t> counts,
                                   std::span<const int32_t> indices, const MixedParams& params);
struct MixedDecoded {
  KvLayout layout;
  MixedParams params;
  std::vector<uint32_t> counts;
  std::vector<int32_t> indices;
  std::vector<float> kv;  // every token: kept rows as stored, the others dequantized
};
Result<MixedDecoded> DecodeMixed(std::span<const std::byte> bytes);

struct GearParams {
  int bits = 4;
  int64_t group = 32;
  int64_t rank = 4;
  int64_t outliers = 0;  // per matrix
};
uint64_t GearBytes(const KvLayout& layout, const GearParams& params);
std::vector<std::byte> EncodeGear(const KvLayout& layout, std::span<const float> kv,
                                  const GearParams& params);
struct GearDecoded {
  KvLayout layout;
  GearParams params;
  std::vector<float> kv;
};
Result<GearDecoded> DecodeGear(std::span<const std::byte> bytes);

struct MiniCacheParams {
  int64_t start = 0;     // first merged layer
  int64_t retained = 0;  // tokens kept unmerged per (pair, K|V, head)
};
uint64_t MiniCacheBytes(const KvLayout& layout, const MiniCacheParams& params);
std::vector<std::byte> EncodeMiniCache(const KvLayout& layout, std::span<const float> kv,
                                       const MiniCacheParams& params);
struct MiniCacheDecoded {
  KvLayout layout;
  MiniCacheParams params;
  std::vector<float> kv;
};
Result<MiniCacheDecoded> DecodeMiniCache(std::span<const std::byte> bytes);

}  // namespace kvcomm::kvstore::compress
