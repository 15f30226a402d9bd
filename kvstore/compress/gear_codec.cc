// GEAR's codec (codec.h): outliers exact, the rest quantized, and a low-rank approximation of
// the quantization residual.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>

#include "kernels/compress.h"
#include "kvstore/compress/codec.h"
#include "kvstore/compress/internal/byte_io.h"

namespace kvcomm::kvstore::compress {
namespace {

constexpr size_t kGearHeader = 4 + 10 * 4;
constexpr int kPowerIterations = 2;

uint64_t MatrixBytes(const KvLayout& l, const GearParams& p) {
  const uint64_t n = uint64_t{l.tokens} * l.head_dim;
  return n * p.bits / 8 + n / p.group * 8 + p.outliers * 8 +
         (uint64_t{l.tokens} + l.head_dim) * p.rank * 4;
}

}  // namespace

uint64_t GearBytes(const KvLayout& l, const GearParams& p) {
  return kGearHeader + uint64_t{l.num_layers} * 2 * l.kv_heads * MatrixBytes(l, p);
}

std::vector<std::byte> EncodeGear(const KvLayout& l, std::span<const float> kv,
                                  const GearParams& p) {
  assert(kv.size() == uint64_t{l.num_layers} * 2 * l.ElementsPerHalf());
  const int64_t T = l.tokens, D = l.head_dim, n = T * D, groups = n / p.group;
  internal::Writer w(GearBytes(l, p));
  internal::WriteLayout(w, "KVGR", l);
  for (int64_t v : {int64_t{p.bits}, p.group, p.rank, p.outliers}) w.U32(static_cast<uint32_t>(v));
  std::vector<int32_t> order(n);
  std::vector<float> x(n), restored(n), scale(groups), zero(groups), u(T * p.rank),
      basis(D * p.rank);
  std::vector<uint8_t> codes(n * p.bits / 8);
  for (uint64_t m = 0; m < uint64_t{l.num_layers} * 2 * l.kv_heads; ++m) {
    const float* matrix = kv.data() + m * n;
    std::copy_n(matrix, n, x.begin());
    // Outliers: the largest magnitudes (ties to the lower index), by ascending index.
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + p.outliers, order.end(),
                      [&](int32_t a, int32_t b) {
                        const float fa = std::abs(matrix[a]), fb = std::abs(matrix[b]);
                        return fa > fb || (fa == fb && a < b);
                      });
    std::sort(order.begin(), order.begin() + p.outliers);
    for (int64_t i = 0; i < p.outliers; ++i) x[order[i]] = 0;
    kernels::cpu::QuantizeGroups(x.data(), groups, p.group, p.bits, codes.data(), scale.data(),
                                 zero.data());
    kernels::cpu::DequantizeGroups(codes.data(), scale.data(), zero.data(), groups, p.group, p.bits,
                                   restored.data());
    for (int64_t i = 0; i < n; ++i) restored[i] = x[i] - restored[i];  // the residual
    for (int64_t i = 0; i < p.outliers; ++i) restored[order[i]] = 0;   // restored exactly anyway
    kernels::cpu::LowRank(restored.data(), T, D, p.rank, kPowerIterations, u.data(), basis.data());
    w.Bytes(codes.data(), codes.size());
    w.Bytes(scale.data(), groups * 4);
    w.Bytes(zero.data(), groups * 4);
    for (int64_t i = 0; i < p.outliers; ++i) {
      w.U32(static_cast<uint32_t>(order[i]));
      w.Bytes(&matrix[order[i]], 4);
    }
    w.Bytes(u.data(), u.size() * 4);
    w.Bytes(basis.data(), basis.size() * 4);
  }
  return w.Take();
}

Result<GearDecoded> DecodeGear(std::span<const std::byte> bytes) {
  internal::Reader r(bytes);
  GearDecoded out;
  KVCOMM_ASSIGN_OR_RETURN(out.layout, internal::ReadLayout(r, "KVGR", "gear"));
  const KvLayout& l = out.layout;
  uint32_t bits = 0, group = 0, rank = 0, outliers = 0;
  const int64_t T = l.tokens, D = l.head_dim, n = T * D;
  if (!r.U32(bits) || !r.U32(group) || !r.U32(rank) || !r.U32(outliers) ||
      (bits != 2 && bits != 4 && bits != 8) || group == 0 || group * bits % 8 != 0 ||
      D % group != 0 || rank == 0 || rank > std::min(T, D) || outliers > n)
    return Error(ErrorCode::kDataLoss, "gear segment parameters are damaged");
  out.params = {static_cast<int>(bits), group, rank, outliers};
  if (GearBytes(l, out.params) != bytes.size())
    return Error(ErrorCode::kDataLoss, "gear segment has {} bytes, its header says {}",
                 bytes.size(), GearBytes(l, out.params));
  const int64_t groups = n / group;
  out.kv.resize(uint64_t{l.num_layers} * 2 * l.ElementsPerHalf());
  std::vector<float> scale(groups), zero(groups), u(T * rank), basis(D * rank);
  std::vector<uint8_t> codes(n * bits / 8);
  for (uint64_t m = 0; m < uint64_t{l.num_layers} * 2 * l.kv_heads; ++m) {
    float* x = out.kv.data() + m * n;
    r.Bytes(codes.data(), codes.size());
    r.Bytes(scale.data(), groups * 4);
    r.Bytes(zero.data(), groups * 4);
    std::vector<std::pair<uint32_t, float>> sparse(outliers);
    for (auto& [index, value] : sparse) {
      r.U32(index);
      r.Bytes(&value, 4);
      if (index >= n)
        return Error(ErrorCode::kDataLoss, "gear outlier index {} is out of range", index);
    }
    r.Bytes(u.data(), u.size() * 4);
    r.Bytes(basis.data(), basis.size() * 4);
    kernels::cpu::DequantizeGroups(codes.data(), scale.data(), zero.data(), groups, group,
                                   static_cast<int>(bits), x);
    kernels::cpu::LowRankReconstruct(u.data(), basis.data(), T, D, rank, x);
    for (const auto& [index, value] : sparse) x[index] = value;
  }
  return out;
}

}  // namespace kvcomm::kvstore::compress
