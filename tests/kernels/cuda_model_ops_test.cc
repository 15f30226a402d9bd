// Every CUDA model op against its CPU reference (kernels/model_ops.h) on random inputs, with
// bf16 tolerances: inputs are rounded to bf16 first so both sides see the same values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "common/dtype.h"
#include "kernels/device.h"
#include "kernels/model_ops.h"
#include "tests/kernels/random_values.h"
#if KVCOMM_HAVE_CUDA
#include "tests/kernels/device_values.h"
#endif

#if KVCOMM_HAVE_CUDA
#include "kernels/cuda/blas.h"
#include "kernels/cuda/launchers.h"
#endif

namespace kvcomm::kernels {
namespace {

#if KVCOMM_HAVE_CUDA
using cuda::bf16;

#define REQUIRE_GPU() \
  if (!CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU: " << CudaDeviceDescription()

Dev Poisoned(size_t bytes) {
  Dev d{std::move(DeviceBuffer::Allocate(bytes)).value()};
  std::vector<uint8_t> poison(bytes, 0x7f);  // bf16 0x7f7f is a huge value; fp32 too
  EXPECT_TRUE(CopyHostToDevice(d.buffer.data(), poison.data(), bytes).ok());
  return d;
}
// |got - want| <= atol + rtol * |want| everywhere.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, float rtol,
                 float atol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_LE(std::abs(got[i] - want[i]), atol + rtol * std::abs(want[i]))
        << "at " << i << ": " << got[i] << " vs " << want[i];
  }
}

TEST(CudaModelOps, RmsNormMatchesCpu) {
  REQUIRE_GPU();
  // Rows held in registers (dim % 4 == 0, up to 16384) and the strided kernel (30, 16388).
  for (int64_t dim : {30, 32, 4096, 12288, 16388}) {
    SCOPED_TRACE(dim);
    auto x = kvcomm::testing::RandomNormal(5 * dim, 1, 1.0f, true),
         w = kvcomm::testing::RandomNormal(dim, 2, 1.0f, true);
    std::vector<float> want(x.size());
    cpu::RmsNorm(x.data(), w.data(), 5, dim, 1e-5f, want.data());
    Dev dx = ToDevice(x), dw = ToDeviceBf16(w), out = Poisoned(x.size() * 2);
    ASSERT_EQ(
        cuda::LaunchRmsNorm(dx.as<float>(), dw.as<bf16>(), 5, dim, 1e-5f, out.as<bf16>(), nullptr),
        cudaSuccess);
    ExpectClose(FromDeviceBf16(out, x.size()), want, 1.0f / 128, 1e-3f);
  }
}

TEST(CudaModelOps, RopeMatchesCpuOnFusedQkvRows) {
  REQUIRE_GPU();
  const int64_t tokens = 7, heads = 4, kv_heads = 2, hd = 64, stride = (heads + 2 * kv_heads) * hd;
  auto qkv = kvcomm::testing::RandomNormal(tokens * stride, 3, 1.0f, true);
  std::vector<int32_t> positions = {0, 1, 2, 100, 1000, 5000, 30000};
  std::vector<float> inv_freq(hd / 2);
  for (int64_t i = 0; i < hd / 2; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / hd);
  std::vector<float> q(tokens * heads * hd), k(tokens * kv_heads * hd);
  for (int64_t t = 0; t < tokens; ++t) {
    std::copy_n(qkv.begin() + t * stride, heads * hd, q.begin() + t * heads * hd);
    std::copy_n(qkv.begin() + t * stride + heads * hd, kv_heads * hd,
                k.begin() + t * kv_heads * hd);
  }
  cpu::Rope(q.data(), positions, heads, hd, inv_freq);
  cpu::Rope(k.data(), positions, kv_heads, hd, inv_freq);
  Dev d = ToDeviceBf16(qkv), dpos = ToDevice(positions), dfreq = ToDevice(inv_freq);
  ASSERT_EQ(cuda::LaunchRope(d.as<bf16>(), tokens, stride, heads, kv_heads, hd, dpos.as<int32_t>(),
                             dfreq.as<float>(), nullptr),
            cudaSuccess);
  auto got = FromDeviceBf16(d, qkv.size());
  std::vector<float> got_q, got_k;
  for (int64_t t = 0; t < tokens; ++t) {
    got_q.insert(got_q.end(), got.begin() + t * stride, got.begin() + t * stride + heads * hd);
    got_k.insert(got_k.end(), got.begin() + t * stride + heads * hd,
                 got.begin() + t * stride + (heads + kv_heads) * hd);
  }
  // fp32 angles on the GPU (as transformers) vs double on the CPU: at position 30000 the angle
  // itself carries ~2e-3 absolute error.
  ExpectClose(got_q, q, 1.0f / 64, 2e-2f);
  ExpectClose(got_k, k, 1.0f / 64, 2e-2f);
}

TEST(CudaModelOps, SwiGluAndEmbeddingMatchCpu) {
  REQUIRE_GPU();
  const int64_t rows = 3, n = 1000;
  auto gu = kvcomm::testing::RandomNormal(rows * 2 * n, 4, 3.0f, true);
  std::vector<float> gate(rows * n), up(rows * n), want(rows * n);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(gu.begin() + r * 2 * n, n, gate.begin() + r * n);
    std::copy_n(gu.begin() + r * 2 * n + n, n, up.begin() + r * n);
  }
  cpu::SwiGlu(gate.data(), up.data(), rows * n, want.data());
  Dev d = ToDeviceBf16(gu), out = Poisoned(rows * n * 2);
  ASSERT_EQ(cuda::LaunchSwiGlu(d.as<bf16>(), rows, n, out.as<bf16>(), nullptr), cudaSuccess);
  ExpectClose(FromDeviceBf16(out, rows * n), want, 1.0f / 128, 1e-3f);

  auto table = kvcomm::testing::RandomNormal(50 * 16, 5, 1.0f, true);
  std::vector<int32_t> ids = {3, 49, 0, 3};
  std::vector<float> rows_want(ids.size() * 16);
  cpu::Embedding(table.data(), ids, 16, rows_want.data());
  Dev dt = ToDeviceBf16(table), di = ToDevice(ids), dout = Poisoned(rows_want.size() * 4);
  ASSERT_EQ(
      cuda::LaunchEmbedding(dt.as<bf16>(), di.as<int32_t>(), 4, 16, dout.as<float>(), nullptr),
      cudaSuccess);
  EXPECT_EQ(FromDeviceF32(dout, rows_want.size()), rows_want);
}

TEST(CudaModelOps, GemvMatchesCpuLinearForOneRow) {
  REQUIRE_GPU();
  const int64_t in = 4096, out = 300;
  auto x = kvcomm::testing::RandomNormal(in, 12, 1.0f, true),
       w = kvcomm::testing::RandomNormal(out * in, 13, 1.0f, true),
       residual = kvcomm::testing::RandomNormal(out, 14, 1.0f, true);
  std::vector<float> want(out);
  cpu::Linear(x.data(), w.data(), nullptr, 1, in, out, want.data());
  Dev dx = ToDeviceBf16(x), dw = ToDeviceBf16(w), y16 = Poisoned(out * 2), y32 = ToDevice(residual);
  ASSERT_EQ(
      cuda::LaunchGemv(dw.as<bf16>(), dx.as<bf16>(), in, out, y16.as<bf16>(), false, 0.f, nullptr),
      cudaSuccess);
  ExpectClose(FromDeviceBf16(y16, out), want, 1.0f / 128, 1e-2f);
  ASSERT_EQ(
      cuda::LaunchGemv(dw.as<bf16>(), dx.as<bf16>(), in, out, y32.as<float>(), true, 1.f, nullptr),
      cudaSuccess);
  for (int64_t i = 0; i < out; ++i) want[i] += residual[i];
  ExpectClose(FromDeviceF32(y32, out), want, 1e-4f, 5e-2f);
}

TEST(CudaModelOps, LinearMatchesCpu) {
  REQUIRE_GPU();
  auto blas = cuda::Blas::Create();
  ASSERT_TRUE(blas.ok());
  const int64_t rows = 9, in = 96, out = 40;
  auto x = kvcomm::testing::RandomNormal(rows * in, 6, 1.0f, true),
       w = kvcomm::testing::RandomNormal(out * in, 7, 1.0f, true),
       residual = kvcomm::testing::RandomNormal(rows * out, 8, 1.0f, true);
  std::vector<float> want(rows * out);
  cpu::Linear(x.data(), w.data(), nullptr, rows, in, out, want.data());
  Dev dx = ToDeviceBf16(x), dw = ToDeviceBf16(w), dy = ToDevice(residual);
  ASSERT_TRUE((*blas)
                  ->Linear(dx.as<bf16>(), dw.as<bf16>(), rows, in, out, dy.as<float>(), true, 1.0f)
                  .ok());
  std::vector<float> want_acc(want);
  for (size_t i = 0; i < want.size(); ++i) want_acc[i] += residual[i];
  ExpectClose(FromDeviceF32(dy, want.size()), want_acc, 1e-4f, 1e-3f);
}

// Random fused qkv rows (q of `heads`, then k and v) and a random K/V cache, with the CPU
// reference's attention output for them (scale 1 / sqrt(hd)).
struct AttentionCase {
  std::vector<float> qkv, k, v, want;
};
AttentionCase MakeAttentionCase(int64_t tokens, int64_t q_start, int64_t heads, int64_t kv_heads,
                                int64_t hd, int64_t capacity, uint32_t seed) {
  const int64_t stride = (heads + 2 * kv_heads) * hd;
  AttentionCase c{kvcomm::testing::RandomNormal(tokens * stride, seed, 1.0f, true),
                  kvcomm::testing::RandomNormal(kv_heads * capacity * hd, seed + 1, 1.0f, true),
                  kvcomm::testing::RandomNormal(kv_heads * capacity * hd, seed + 2, 1.0f, true),
                  std::vector<float>(tokens * heads * hd)};
  std::vector<float> q(tokens * heads * hd);
  for (int64_t t = 0; t < tokens; ++t)
    std::copy_n(c.qkv.begin() + t * stride, heads * hd, q.begin() + t * heads * hd);
  cpu::Attention(q.data(), c.k.data(), c.v.data(), tokens, q_start, heads, kv_heads, hd, capacity,
                 1.0f / std::sqrt(static_cast<float>(hd)), c.want.data());
  return c;
}

// Both attention paths (streaming, and GEMM + causal softmax) against the CPU reference.
TEST(CudaModelOps, AttentionPathsMatchCpu) {
  REQUIRE_GPU();
  auto blas = cuda::Blas::Create();
  ASSERT_TRUE(blas.ok());
  const int64_t heads = 8, kv_heads = 2, hd = 128, capacity = 1300, group = heads / kv_heads;
  const int64_t stride = (heads + 2 * kv_heads) * hd;
  const float scale = 1.0f / std::sqrt(128.0f);
  // The last cases reach over several key splits of the streaming path.
  for (auto [tokens, q_start] : {std::pair<int64_t, int64_t>{1, 70},
                                 {3, 10},
                                 {40, 0},
                                 {33, 50},
                                 {96, 0},
                                 {70, 25},
                                 {1, 1200},
                                 {8, 1000},
                                 {5, 255}}) {
    const AttentionCase c = MakeAttentionCase(tokens, q_start, heads, kv_heads, hd, capacity, 9);
    const std::vector<float>& want = c.want;
    Dev dqkv = ToDeviceBf16(c.qkv), dk = ToDeviceBf16(c.k), dv = ToDeviceBf16(c.v);
    // One split, and split over the keys when the context is long enough.
    const int64_t partial_floats =
        cuda::AttentionStreamingPartialFloats(tokens, q_start, heads, hd);
    Dev partials = Poisoned(std::max<int64_t>(partial_floats, 1) * 4);
    for (float* workspace : {static_cast<float*>(nullptr), partials.as<float>()}) {
      Dev streaming = Poisoned(want.size() * 2);
      ASSERT_EQ(cuda::LaunchAttentionStreaming(dqkv.as<bf16>(), stride, tokens, q_start, heads,
                                               kv_heads, hd, dk.as<bf16>(), dv.as<bf16>(), capacity,
                                               scale, streaming.as<bf16>(),
                                               partial_floats > 0 ? workspace : nullptr, nullptr),
                cudaSuccess);
      ExpectClose(FromDeviceBf16(streaming, want.size()), want, 1.0f / 64, 2e-3f);
    }

    const int64_t ctx = q_start + tokens;
    Dev q_heads = Poisoned(heads * tokens * hd * 2), o_heads = Poisoned(heads * tokens * hd * 2);
    Dev scores = Poisoned(group * tokens * ctx * 4), probs = Poisoned(group * tokens * ctx * 2),
        out = Poisoned(want.size() * 2);
    ASSERT_EQ(cuda::LaunchGatherQ(dqkv.as<bf16>(), stride, tokens, heads, hd, q_heads.as<bf16>(),
                                  nullptr),
              cudaSuccess);
    for (int64_t g = 0; g < kv_heads; ++g) {
      ASSERT_TRUE((*blas)
                      ->BatchedABt(q_heads.as<bf16>() + g * group * tokens * hd, tokens * hd,
                                   dk.as<bf16>() + g * capacity * hd, 0, scores.as<float>(),
                                   tokens * ctx, tokens, ctx, hd, hd, group)
                      .ok());
      ASSERT_EQ(cuda::LaunchCausalSoftmax(scores.as<float>(), group, tokens, ctx, q_start, scale,
                                          probs.as<bf16>(), nullptr),
                cudaSuccess);
      ASSERT_TRUE((*blas)
                      ->BatchedAB(probs.as<bf16>(), tokens * ctx, dv.as<bf16>() + g * capacity * hd,
                                  0, o_heads.as<bf16>() + g * group * tokens * hd, tokens * hd,
                                  tokens, hd, ctx, group)
                      .ok());
    }
    ASSERT_EQ(cuda::LaunchScatterO(o_heads.as<bf16>(), tokens, heads, hd, out.as<bf16>(), nullptr),
              cudaSuccess);
    ExpectClose(FromDeviceBf16(out, want.size()), want, 1.0f / 32, 5e-3f);
  }
}
// The tensor-core kernels (mma.sync everywhere, wgmma on Hopper) against the CPU reference:
// chunks that start at 0 or after a cached prefix, lengths that are and are not multiples of
// their query blocks and key tiles, and (wgmma) a kv group's heads packed into one CTA when
// their queries fit (group * tokens <= 64: decode, a few new tokens), for several group sizes.
TEST(CudaModelOps, FlashAttentionMatchesCpu) {
  REQUIRE_GPU();
  using Launcher = decltype(&cuda::LaunchFlashAttention);
  std::vector<std::pair<const char*, Launcher>> kernels = {
      {"mma.sync", cuda::LaunchFlashAttentionMmaSync}};
  const bool wgmma = cuda::FlashAttentionWgmmaAvailable();
  if (wgmma) {
    kernels.push_back({"wgmma", cuda::LaunchFlashAttentionWgmma});
  } else {
    std::printf("wgmma kernel not available on %s: only mma.sync checked\n",
                CudaDeviceDescription().c_str());
  }
  struct Shape {
    int64_t heads, kv_heads;
    std::vector<std::pair<int64_t, int64_t>> cases;  // (tokens, q_start)
    int split_cases, packed_cases;                   // of them, where wgmma splits / packs
  };
  const std::vector<Shape> shapes = {{8,
                                      2,
                                      {{1, 0},
                                       {17, 0},
                                       {128, 0},
                                       {129, 3},
                                       {300, 0},
                                       {257, 700},
                                       {64, 1000},
                                       {500, 800},
                                       {1, 1290},
                                       {100, 1100},
                                       {128, 1000},
                                       {5, 0},
                                       {16, 0},
                                       {3, 600},
                                       {16, 1100}},
                                      6,
                                      6},
                                     {16, 2, {{1, 700}, {8, 0}, {6, 900}, {9, 1100}}, 3, 3},
                                     {4, 4, {{1, 1200}, {40, 800}, {64, 3}, {65, 1100}}, 3, 3}};
  const int64_t hd = 128, capacity = 1300;
  const float scale = 1.0f / std::sqrt(128.0f);
  Dev dummy = Poisoned(1 << 20);
  for (const Shape& shape : shapes) {
    const int64_t heads = shape.heads, kv_heads = shape.kv_heads;
    const int64_t stride = (heads + 2 * kv_heads) * hd;
    SCOPED_TRACE(::testing::Message() << heads << " heads, " << kv_heads << " kv heads");
    int split_cases = 0, packed_cases = 0;
    for (auto [tokens, q_start] : shape.cases) {
      SCOPED_TRACE(::testing::Message() << tokens << " queries after " << q_start);
      const AttentionCase c = MakeAttentionCase(tokens, q_start, heads, kv_heads, hd, capacity, 21);
      const std::vector<float>& want = c.want;
      Dev dqkv = ToDeviceBf16(c.qkv), dk = ToDeviceBf16(c.k), dv = ToDeviceBf16(c.v);
      for (auto [name, launch] : kernels) {
        SCOPED_TRACE(name);
        Dev out = Poisoned(want.size() * 2);
        ASSERT_EQ(
            launch(dqkv.as<bf16>(), stride, tokens, q_start, heads, kv_heads, hd, dk.as<bf16>(),
                   dv.as<bf16>(), capacity, scale, out.as<bf16>(), nullptr, nullptr),
            cudaSuccess);
        ExpectClose(FromDeviceBf16(out, want.size()), want, 1.0f / 32, 5e-3f);
      }
      packed_cases += cuda::FlashAttentionPacksGroups(tokens, heads, kv_heads);
      // Few queries over a long cache: the wgmma kernel splits the keys over several CTAs per
      // head or kv group (through the runtime's entry point, given the workspace it asks for).
      const int64_t split_floats =
          cuda::FlashAttentionSplitFloats(tokens, q_start, heads, kv_heads);
      if (split_floats > 0) {
        SCOPED_TRACE("wgmma, keys split");
        Dev workspace = Poisoned(split_floats * 4), out = Poisoned(want.size() * 2);
        ASSERT_EQ(cuda::LaunchFlashAttention(dqkv.as<bf16>(), stride, tokens, q_start, heads,
                                             kv_heads, hd, dk.as<bf16>(), dv.as<bf16>(), capacity,
                                             scale, out.as<bf16>(), workspace.as<float>(), nullptr),
                  cudaSuccess);
        ExpectClose(FromDeviceBf16(out, want.size()), want, 1.0f / 32, 5e-3f);
        ++split_cases;
      }
    }
    if (wgmma) {
      EXPECT_EQ(split_cases, shape.split_cases);
      EXPECT_EQ(packed_cases, shape.packed_cases);
    }
  }
  const int64_t heads = 8, kv_heads = 2, stride = (heads + 2 * kv_heads) * hd;
  for (auto [name, launch] : kernels) {
    SCOPED_TRACE(name);
    // Unsupported head size, queries past the cache's capacity.
    EXPECT_EQ(launch(dummy.as<bf16>(), stride, 4, 0, heads, kv_heads, 64, dummy.as<bf16>(),
                     dummy.as<bf16>(), capacity, scale, dummy.as<bf16>(), nullptr, nullptr),
              cudaErrorInvalidValue);
    EXPECT_EQ(
        launch(dummy.as<bf16>(), stride, 4, capacity - 2, heads, kv_heads, hd, dummy.as<bf16>(),
               dummy.as<bf16>(), capacity, scale, dummy.as<bf16>(), nullptr, nullptr),
        cudaErrorInvalidValue);
  }
}
#endif  // KVCOMM_HAVE_CUDA

TEST(CudaModelOps, BuildHasOrLacksTheCudaBackendAsConfigured) {
#if KVCOMM_HAVE_CUDA
  EXPECT_EQ(CudaAvailable(), CudaDeviceDescription().rfind("no CUDA", 0) != 0);
#else
  EXPECT_FALSE(CudaAvailable());
#endif
}

}  // namespace
}  // namespace kvcomm::kernels
