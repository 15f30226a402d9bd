// The CUDA compression primitives against their CPU references (kernels/compress.h) on random
// inputs rounded to bf16 so both sides see the same numbers: window attention scores (batched
// GEMM + softmax statistics + column sums), pooling, top-k, gather and group quantization.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "common/dtype.h"
#include "kernels/compress.h"
#include "kernels/device.h"
#include "tests/kernels/random_values.h"

#if KVCOMM_HAVE_CUDA
#include "kernels/cuda/blas.h"
#include "kernels/cuda/launchers.h"
#include "tests/kernels/device_values.h"
#endif

namespace kvcomm::kernels {
namespace {

#if KVCOMM_HAVE_CUDA
#define REQUIRE_GPU() \
  if (!CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU: " << CudaDeviceDescription()

Dev Scratch(size_t bytes) { return Dev{std::move(DeviceBuffer::Allocate(bytes)).value()}; }

TEST(CudaCompress, ObservationScoresMatchCpu) {
  REQUIRE_GPU();
  auto blas = cuda::Blas::Create();
  ASSERT_TRUE(blas.ok());
  for (int64_t tokens : {int64_t{300}, int64_t{301}}) {  // rows of whole 16 bytes, and not
    const int64_t q_heads = 8, kv_heads = 2, window = 5, dim = 64;
    const int64_t group = q_heads / kv_heads, rows = group * window;
    auto q = testing::RandomNormal(q_heads * window * dim, 1, 1.0f, true);
    auto k = testing::RandomNormal(kv_heads * tokens * dim, 2, 1.0f, true);
    std::vector<float> want(kv_heads * tokens);
    cpu::ObservationScores(q.data(), k.data(), q_heads, kv_heads, window, tokens, dim, want.data());
    Dev dq = ToDeviceBf16(q), dk = ToDeviceBf16(k);
    Dev logits = Scratch(kv_heads * rows * tokens * 4), stats = Scratch(kv_heads * rows * 8),
        scores = Scratch(kv_heads * tokens * 4);
    ASSERT_TRUE((*blas)
                    ->BatchedABt(dq.as<cuda::bf16>(), rows * dim, dk.as<cuda::bf16>(), tokens * dim,
                                 logits.as<float>(), rows * tokens, rows, tokens, dim, dim,
                                 kv_heads)
                    .ok());
    const float scale = 1.0f / std::sqrt(float(dim));
    ASSERT_EQ(cuda::LaunchWindowSoftmaxStats(logits.as<float>(), kv_heads * rows, tokens, window,
                                             scale, stats.as<float2>(), nullptr),
              cudaSuccess);
    ASSERT_EQ(cuda::LaunchWindowColumnSums(logits.as<float>(), stats.as<float2>(), kv_heads, rows,
                                           tokens, window, scale, scores.as<float>(), nullptr),
              cudaSuccess);
    const auto got = FromDeviceF32(scores, want.size());
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-4 + 2e-3 * want[i]) << tokens << " " << i;
  }
}

TEST(CudaCompress, PoolForceKeepTopKAndGatherMatchCpu) {
  REQUIRE_GPU();
  const int64_t rows = 6, n = 5000, dim = 64;
  // Rounded to steps of 1/8 so that ties (the earlier position wins) occur.
  auto x = testing::RandomNormal(rows * n, 3);
  for (auto& v : x) v = std::round(v * 8) / 8;
  for (bool max : {true, false}) {
    std::vector<float> want(x.size());
    cpu::Pool1D(x.data(), rows, n, 7, max ? cpu::PoolKind::kMax : cpu::PoolKind::kMean,
                want.data());
    Dev in = ToDevice(x), out = Scratch(x.size() * 4);
    ASSERT_EQ(cuda::LaunchPool1D(in.as<float>(), rows, n, 7, max, out.as<float>(), nullptr),
              cudaSuccess);
    const auto got = FromDeviceF32(out, x.size());
    for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5) << i;
  }
  Dev scores = ToDevice(x);
  ASSERT_EQ(cuda::LaunchForceKeep(scores.as<float>(), rows, n, 4, 16, nullptr), cudaSuccess);
  auto forced = x;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < n; ++t)
      if (t < 4 || t >= n - 16) forced[r * n + t] = INFINITY;
  EXPECT_EQ(FromDeviceF32(scores, x.size()), forced);
  auto kv = testing::RandomNormal(rows * n * dim, 4, 1.0f, true);
  Dev dkv = ToDeviceBf16(kv);
  for (int64_t k : {int64_t{1}, int64_t{20}, int64_t{1234}, n}) {
    std::vector<int32_t> want(rows * k), got(rows * k);
    cpu::TopKPerRow(forced.data(), rows, n, k, want.data());
    Dev indices = Scratch(rows * k * 4);
    ASSERT_EQ(
        cuda::LaunchTopKPerRow(scores.as<float>(), rows, n, k, indices.as<int32_t>(), nullptr),
        cudaSuccess);
    ASSERT_TRUE(CopyDeviceToHost(got.data(), indices.buffer.data(), got.size() * 4).ok());
    ASSERT_EQ(got, want) << "k=" << k;
    std::vector<float> gathered(rows * k * dim);
    cpu::GatherRows(kv.data(), rows, n, dim, want.data(), k, gathered.data());
    Dev rows_out = Scratch(rows * k * dim * 2);
    ASSERT_EQ(cuda::LaunchGatherRows(dkv.as<cuda::bf16>(), rows, n, dim, indices.as<int32_t>(), k,
                                     rows_out.as<cuda::bf16>(), nullptr),
              cudaSuccess);
    ASSERT_EQ(FromDeviceBf16(rows_out, gathered.size()), gathered) << "k=" << k;
  }
}

TEST(CudaCompress, GroupQuantizationMatchesCpuBitForBit) {
  REQUIRE_GPU();
  const int64_t groups = 777, group_size = 32;
  auto x = testing::RandomNormal(groups * group_size, 5, 2.0f, true);
  Dev in = ToDeviceBf16(x);
  for (int bits : {2, 4, 8}) {
    const int64_t bytes = groups * group_size * bits / 8;
    std::vector<uint8_t> want_codes(bytes), got_codes(bytes);
    std::vector<float> want_scale(groups), want_zero(groups);
    cpu::QuantizeGroups(x.data(), groups, group_size, bits, want_codes.data(), want_scale.data(),
                        want_zero.data());
    Dev codes = Scratch(bytes), scale = Scratch(groups * 4), zero = Scratch(groups * 4),
        back = Scratch(x.size() * 2);
    ASSERT_EQ(cuda::LaunchQuantizeGroups(in.as<cuda::bf16>(), groups, group_size, bits,
                                         codes.as<uint8_t>(), scale.as<float>(), zero.as<float>(),
                                         nullptr),
              cudaSuccess);
    ASSERT_TRUE(CopyDeviceToHost(got_codes.data(), codes.buffer.data(), bytes).ok());
    EXPECT_EQ(got_codes, want_codes) << bits;
    EXPECT_EQ(FromDeviceF32(scale, groups), want_scale);
    EXPECT_EQ(FromDeviceF32(zero, groups), want_zero);
    ASSERT_EQ(
        cuda::LaunchDequantizeGroups(codes.as<uint8_t>(), scale.as<float>(), zero.as<float>(),
                                     groups, group_size, bits, back.as<cuda::bf16>(), nullptr),
        cudaSuccess);
    std::vector<float> want_back(x.size());
    cpu::DequantizeGroups(want_codes.data(), want_scale.data(), want_zero.data(), groups,
                          group_size, bits, want_back.data());
    const auto got_back = FromDeviceBf16(back, x.size());
    for (size_t i = 0; i < x.size(); ++i)  // the GPU rounds its output to bf16
      ASSERT_NEAR(got_back[i], want_back[i], 1e-2 * std::abs(want_back[i]) + 1e-6) << i;
  }
}

TEST(CudaCompress, SlerpMergeMatchesCpu) {
  REQUIRE_GPU();
  const int64_t rows = 300, dim = 128;
  auto a = testing::RandomNormal(rows * dim, 6, 1.0f, true);
  auto b = testing::RandomNormal(rows * dim, 7, 1.0f, true);
  for (int64_t d = 0; d < dim; ++d) b[d] = a[d];  // row 0: parallel
  std::vector<float> dir(rows * dim), na(rows), nb(rows), angle(rows);
  cpu::SlerpMerge(a.data(), b.data(), rows, dim, 0.5f, dir.data(), na.data(), nb.data(),
                  angle.data());
  Dev da = ToDeviceBf16(a), db = ToDeviceBf16(b), out = Scratch(rows * dim * 2),
      dna = Scratch(rows * 4), dnb = Scratch(rows * 4), dangle = Scratch(rows * 4);
  ASSERT_EQ(cuda::LaunchSlerpMerge(da.as<cuda::bf16>(), db.as<cuda::bf16>(), rows, dim, 0.5f,
                                   out.as<cuda::bf16>(), dna.as<float>(), dnb.as<float>(),
                                   dangle.as<float>(), nullptr),
            cudaSuccess);
  const auto got = FromDeviceBf16(out, dir.size());
  for (size_t i = 0; i < dir.size(); ++i)
    ASSERT_NEAR(got[i], dir[i], 1e-2 * std::abs(dir[i]) + 2e-3);
  const auto got_na = FromDeviceF32(dna, rows), got_angle = FromDeviceF32(dangle, rows);
  for (int64_t r = 0; r < rows; ++r) {
    ASSERT_NEAR(got_na[r], na[r], 1e-4 * na[r]);
    ASSERT_NEAR(got_angle[r], angle[r], 2e-3);
  }
}

TEST(CudaCompress, LowRankProjectionAndReconstructionMatchCpu) {
  REQUIRE_GPU();
  const int64_t rows = 500, cols = 128, rank = 4;
  auto x = testing::RandomNormal(rows * cols, 8, 1.0f, true);
  auto b = testing::RandomNormal(cols * rank, 9);
  auto a = testing::RandomNormal(rows * rank, 10);
  auto base = testing::RandomNormal(rows * cols, 11);
  std::vector<float> y(rows * rank), out = base;
  cpu::LowRankProject(x.data(), b.data(), rows, cols, rank, y.data());
  cpu::LowRankReconstruct(a.data(), b.data(), rows, cols, rank, out.data());
  Dev dx = ToDeviceBf16(x), db = ToDevice(b), da = ToDevice(a), dout = ToDevice(base),
      dy = Scratch(rows * rank * 4);
  ASSERT_EQ(cuda::LaunchLowRankProject(dx.as<cuda::bf16>(), db.as<float>(), rows, cols, rank,
                                       dy.as<float>(), nullptr),
            cudaSuccess);
  ASSERT_EQ(cuda::LaunchLowRankReconstruct(da.as<float>(), db.as<float>(), rows, cols, rank,
                                           dout.as<float>(), nullptr),
            cudaSuccess);
  const auto got_y = FromDeviceF32(dy, y.size()), got_out = FromDeviceF32(dout, out.size());
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(got_y[i], y[i], 1e-3 * (1 + std::abs(y[i])));
  for (size_t i = 0; i < out.size(); ++i)
    ASSERT_NEAR(got_out[i], out[i], 1e-4 * (1 + std::abs(out[i])));
}

#else
TEST(CudaCompress, NeedsCuda) { GTEST_SKIP() << "built without CUDA"; }
#endif

}  // namespace
}  // namespace kvcomm::kernels
