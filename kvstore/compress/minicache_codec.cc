// MiniCache's codec (codec.h): adjacent deep layers share each token's direction.
#include <algorithm>
#include <cassert>
#include <numeric>

#include "kernels/compress.h"
#include "kvstore/compress/codec.h"
#include "kvstore/compress/internal/byte_io.h"

namespace kvcomm::kvstore::compress {
namespace {

constexpr size_t kMiniCacheHeader = 4 + 8 * 4;

int64_t MergedPairs(const KvLayout& l, const MiniCacheParams& p) {
  return (int64_t{l.num_layers} - p.start) / 2;
}

}  // namespace

uint64_t MiniCacheBytes(const KvLayout& l, const MiniCacheParams& p) {
  const uint64_t row = uint64_t{l.head_dim} * DTypeSize(l.dtype), T = l.tokens;
  const uint64_t pairs = MergedPairs(l, p), raw_layers = l.num_layers - 2 * pairs;
  const uint64_t per_head_pair = T * row + T * 8 + p.retained * (4 + 2 * row);
  return kMiniCacheHeader + raw_layers * 2 * l.kv_heads * T * row +
         pairs * 2 * l.kv_heads * per_head_pair;
}

std::vector<std::byte> EncodeMiniCache(const KvLayout& l, std::span<const float> kv,
                                       const MiniCacheParams& p) {
  assert(kv.size() == uint64_t{l.num_layers} * 2 * l.ElementsPerHalf());
  assert(p.start >= 0 && p.start <= l.num_layers && p.retained <= l.tokens);
  const int64_t T = l.tokens, D = l.head_dim, H = l.kv_heads, pairs = MergedPairs(l, p);
  const uint64_t half = l.ElementsPerHalf();
  internal::Writer w(MiniCacheBytes(l, p));
  internal::WriteLayout(w, "KVMC", l);
  w.U32(static_cast<uint32_t>(p.start));
  w.U32(static_cast<uint32_t>(p.retained));
  auto layer_half = [&](int64_t layer, int kv_half) {
    return kv.data() + (layer * 2 + kv_half) * half;
  };
  for (int64_t layer = 0; layer < p.start; ++layer) w.Rows(layer_half(layer, 0), 2 * half, l.dtype);
  std::vector<float> direction(T * D), norm_a(T), norm_b(T), angle(T);
  std::vector<int32_t> order(T);
  for (int64_t pair = 0; pair < pairs; ++pair) {
    const int64_t first = p.start + 2 * pair;
    for (int kv_half = 0; kv_half < 2; ++kv_half)
      for (int64_t h = 0; h < H; ++h) {
        const float* a = layer_half(first, kv_half) + h * T * D;
        const float* b = layer_half(first + 1, kv_half) + h * T * D;
        kernels::cpu::SlerpMerge(a, b, T, D, 0.5f, direction.data(), norm_a.data(), norm_b.data(),
                                 angle.data());
        // Retained: the tokens whose two directions differ most (ties to the earlier).
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + p.retained, order.end(),
                          [&](int32_t x, int32_t y) {
                            return angle[x] > angle[y] || (angle[x] == angle[y] && x < y);
                          });
        std::sort(order.begin(), order.begin() + p.retained);
        w.Rows(direction.data(), T * D, l.dtype);
        w.Bytes(norm_a.data(), T * 4);
        w.Bytes(norm_b.data(), T * 4);
        w.Bytes(order.data(), p.retained * 4);
        for (int64_t i = 0; i < p.retained; ++i) {
          w.Rows(a + order[i] * D, D, l.dtype);
          w.Rows(b + order[i] * D, D, l.dtype);
        }
      }
  }
  for (int64_t layer = p.start + 2 * pairs; layer < l.num_layers; ++layer)
    w.Rows(layer_half(layer, 0), 2 * half, l.dtype);
  return w.Take();
}

Result<MiniCacheDecoded> DecodeMiniCache(std::span<const std::byte> bytes) {
  internal::Reader r(bytes);
  MiniCacheDecoded out;
  KVCOMM_ASSIGN_OR_RETURN(out.layout, internal::ReadLayout(r, "KVMC", "minicache"));
  const KvLayout& l = out.layout;
  uint32_t start = 0, retained = 0;
  if (!r.U32(start) || !r.U32(retained) || start > l.num_layers || retained > l.tokens)
    return Error(ErrorCode::kDataLoss, "minicache segment parameters are damaged");
  out.params = {start, retained};
  if (MiniCacheBytes(l, out.params) != bytes.size())
    return Error(ErrorCode::kDataLoss, "minicache segment has {} bytes, its header says {}",
                 bytes.size(), MiniCacheBytes(l, out.params));
  const int64_t T = l.tokens, D = l.head_dim, H = l.kv_heads, pairs = MergedPairs(l, out.params);
  const uint64_t half = l.ElementsPerHalf();
  out.kv.resize(uint64_t{l.num_layers} * 2 * half);
  auto layer_half = [&](int64_t layer, int kv_half) {
    return out.kv.data() + (layer * 2 + kv_half) * half;
  };
  for (int64_t layer = 0; layer < start; ++layer) r.Rows(layer_half(layer, 0), 2 * half, l.dtype);
  std::vector<float> direction(T * D), norm_a(T), norm_b(T);
  std::vector<int32_t> kept(retained);
  for (int64_t pair = 0; pair < pairs; ++pair) {
    const int64_t first = start + 2 * pair;
    for (int kv_half = 0; kv_half < 2; ++kv_half)
      for (int64_t h = 0; h < H; ++h) {
        float* a = layer_half(first, kv_half) + h * T * D;
        float* b = layer_half(first + 1, kv_half) + h * T * D;
        r.Rows(direction.data(), T * D, l.dtype);
        r.Bytes(norm_a.data(), T * 4);
        r.Bytes(norm_b.data(), T * 4);
        r.Bytes(kept.data(), retained * 4ull);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t d = 0; d < D; ++d) {
            a[t * D + d] = norm_a[t] * direction[t * D + d];
            b[t * D + d] = norm_b[t] * direction[t * D + d];
          }
        for (uint32_t i = 0; i < retained; ++i) {
          if (kept[i] < 0 || kept[i] >= T || (i > 0 && kept[i] <= kept[i - 1]))
            return Error(ErrorCode::kDataLoss,
                         "minicache retained tokens are not ascending in range");
          r.Rows(a + kept[i] * D, D, l.dtype);
          r.Rows(b + kept[i] * D, D, l.dtype);
        }
      }
  }
  for (int64_t layer = start + 2 * pairs; layer < l.num_layers; ++layer)
    r.Rows(layer_half(layer, 0), 2 * half, l.dtype);
  return out;
}

}  // namespace kvcomm::kvstore::compress
