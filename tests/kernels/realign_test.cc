// The realignment kernel: formula checks on the CPU reference, CUDA against CPU.
#include "kernels/realign.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/dtype.h"
#include "kernels/device.h"
#include "kernels/model_ops.h"
#include "tests/kernels/random_values.h"
#if KVCOMM_HAVE_CUDA
#include "kernels/cuda/launchers.h"
#endif

namespace kvcomm::kernels {
namespace {

std::vector<float> InvFreq(int64_t head_dim) {
  std::vector<float> f(head_dim / 2);
  for (size_t i = 0; i < f.size(); ++i) f[i] = std::pow(10000.0f, -2.0f * i / head_dim);
  return f;
}

TEST(RealignCpu, WithoutAnchorsKeysMoveToTheTargetPositionsAndValuesStay) {
  RealignShape s{2, 2, 5, 16, 0, 1};
  const auto inv_freq = InvFreq(16);
  auto neutral = kvcomm::testing::RandomNormal(s.SegmentElements(), 1);  // keys "at position 0"
  std::vector<int32_t> from = {3, 4, 5, 6, 7}, to = {100, 101, 102, 103, 2000};
  // base = keys rotated to `from`; expected = the same keys rotated to `to`.
  auto base = neutral, expected = neutral;
  for (int64_t layer = 0; layer < 2; ++layer) {
    for (int64_t h = 0; h < 2; ++h) {
      float* kb = base.data() + ((layer * 2 + 0) * 2 + h) * 5 * 16;
      float* ke = expected.data() + ((layer * 2 + 0) * 2 + h) * 5 * 16;
      cpu::Rope(kb, from, 1, 16, inv_freq);
      cpu::Rope(ke, to, 1, 16, inv_freq);
    }
  }
  std::vector<float> out(base.size());
  cpu::RealignKv(s, base.data(), from, to, inv_freq, nullptr, nullptr, nullptr, out.data());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], expected[i], 2e-4) << i;
}

TEST(PositionFreeDifferenceCpu, UndoesEachSegmentsOwnRotationBeforeSubtracting) {
  const RealignShape s{3, 2, 6, 16, 0, 1};
  const auto inv_freq = InvFreq(16);
  // x, y: position-free; a, b: the same KV with keys rotated to positions 40.. and 7..
  const auto x = kvcomm::testing::RandomNormal(s.SegmentElements(), 11);
  const auto y = kvcomm::testing::RandomNormal(s.SegmentElements(), 12);
  std::vector<float> a(x.size()), b(y.size()), out(x.size());
  std::vector<int32_t> zeros(6, 0), at_a = {40, 41, 42, 43, 44, 45}, at_b = {7, 8, 9, 10, 11, 12};
  cpu::RealignKv(s, x.data(), zeros, at_a, inv_freq, nullptr, nullptr, nullptr, a.data());
  cpu::RealignKv(s, y.data(), zeros, at_b, inv_freq, nullptr, nullptr, nullptr, b.data());
  cpu::PositionFreeDifference(s, a.data(), 40, b.data(), 7, inv_freq, out.data());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], x[i] - y[i], 2e-4) << i;
}

TEST(RealignCpu, BlendsWeightedDeviationsFromTheFirstBlendedLayerOn) {
  // head_dim 2, positions 0 (no rotation): out = base + sum_a w[a][t] * delta_a on layer 1 only.
  RealignShape s{2, 1, 2, 2, 2, 1};
  std::vector<float> base(s.SegmentElements(), 1.0f);
  std::vector<float> deltas(2 * s.SegmentElements());
  for (size_t i = 0; i < deltas.size(); ++i) deltas[i] = i < base.size() ? 10.0f : 100.0f;
  std::vector<float> wk = {0.5f, 0.25f, 0.5f, 0.75f},
                     wv = {0.0f, 1.0f, 1.0f, 0.0f};  // [anchor][token]
  std::vector<int32_t> zero = {0, 0};
  std::vector<float> out(base.size());
  cpu::RealignKv(s, base.data(), zero, zero, InvFreq(2), deltas.data(), wk.data(), wv.data(),
                 out.data());
  // Layer 0 (elements 0..7) untouched.
  for (int i = 0; i < 8; ++i) EXPECT_EQ(out[i], 1.0f);
  // Layer 1 K, token 0: 1 + 0.5*10 + 0.5*100; token 1: 1 + 0.25*10 + 0.75*100.
  EXPECT_FLOAT_EQ(out[8], 56.0f);
  EXPECT_FLOAT_EQ(out[10], 78.5f);
  // Layer 1 V, token 0: 1 + 0*10 + 1*100; token 1: 1 + 1*10 + 0*100.
  EXPECT_FLOAT_EQ(out[12], 101.0f);
  EXPECT_FLOAT_EQ(out[14], 11.0f);
}

TEST(RealignCpu, PerChannelWeightsScaleEachDimension) {
  // head_dim 2, one head, one token, positions 0: each layer-1 channel gets w[0][ch] * 10.
  RealignShape s{2, 1, 1, 2, 1, 1, true};
  std::vector<float> base(s.SegmentElements(), 1.0f), deltas(s.SegmentElements(), 10.0f);
  std::vector<float> weights(s.Channels());  // [anchor 0][layer][K|V][head 0][dim]
  for (size_t c = 0; c < weights.size(); ++c) weights[c] = 0.1f * static_cast<float>(c);
  std::vector<int32_t> zero = {0};
  std::vector<float> out(base.size());
  cpu::RealignKv(s, base.data(), zero, zero, InvFreq(2), deltas.data(), weights.data(),
                 weights.data(), out.data());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], 1.0f);  // layer 0 untouched
  // Layer 1: channels 4..7 are K dim 0, K dim 1, V dim 0, V dim 1 (one token, so elements too).
  for (int c = 4; c < 8; ++c) EXPECT_NEAR(out[c], 1.0f + 0.1f * c * 10.0f, 1e-5) << c;
}

TEST(AnchorDistancesCpu, SumsKeyAndValueDifferencesPerAnchorAndToken) {
  RealignShape s{2, 3, 4, 8, 2};
  auto base = kvcomm::testing::RandomNormal(s.SegmentElements(), 7);
  std::vector<float> anchors(2 * s.SegmentElements());
  const int64_t per_half = s.kv_heads * s.tokens * s.head_dim;
  // Anchor 0 = base + 0.5 on keys, - 0.25 on values; anchor 1 = base except token 2's values + 1.
  for (int64_t i = 0; i < s.SegmentElements(); ++i) {
    const bool is_key = (i / per_half) % 2 == 0;
    const int64_t t = (i / s.head_dim) % s.tokens;
    anchors[i] = base[i] + (is_key ? 0.5f : -0.25f);
    anchors[s.SegmentElements() + i] = base[i] + (!is_key && t == 2 ? 1.f : 0.f);
  }
  std::vector<float> out(2 * s.tokens * 3);
  cpu::AnchorDistances(s, base.data(), anchors.data(), out.data());
  const double per_token = s.layers * s.kv_heads * s.head_dim;  // values per token, K or V
  for (int64_t t = 0; t < s.tokens; ++t) {
    EXPECT_NEAR(out[t * 3], 0.5 * per_token, 1e-4);
    EXPECT_NEAR(out[t * 3 + 1], 0.25 * per_token, 1e-4);
    EXPECT_NEAR(out[t * 3 + 2], 0.0625 * per_token, 1e-4);
    const float moved = t == 2 ? static_cast<float>(per_token) : 0.f;
    EXPECT_NEAR(out[(s.tokens + t) * 3], 0.0, 1e-5);
    EXPECT_NEAR(out[(s.tokens + t) * 3 + 1], moved, 1e-4);
    EXPECT_NEAR(out[(s.tokens + t) * 3 + 2], moved, 1e-4);
  }
}

TEST(AnchorChannelDistancesCpu, SumsSquaredDifferencesOverTokensPerChannel) {
  RealignShape s{2, 2, 5, 4, 2};
  auto base = kvcomm::testing::RandomNormal(s.SegmentElements(), 9);
  std::vector<float> anchors(2 * s.SegmentElements());
  for (int64_t i = 0; i < s.SegmentElements(); ++i) {
    const int64_t d = i % s.head_dim;
    anchors[i] = base[i] + 0.1f * static_cast<float>(d + 1);  // grows with the dim
    anchors[s.SegmentElements() + i] = base[i] - 1.f;
  }
  std::vector<float> out(2 * s.Channels());
  cpu::AnchorChannelDistances(s, base.data(), anchors.data(), out.data());
  for (int64_t c = 0; c < s.Channels(); ++c) {
    const double step = 0.1 * (c % s.head_dim + 1);
    EXPECT_NEAR(out[c], s.tokens * step * step, 1e-4);
    EXPECT_NEAR(out[s.Channels() + c], s.tokens * 1.0, 1e-4);
  }
}

TEST(SoftmaxOverAnchorsCpu, WeighsCloserAnchorsMoreAtEveryColumn) {
  // Two anchors, two columns, stride 3 (component 1 used): distances (1, 3) and (4, 4).
  const float sums[] = {0, 1, 0, 0, 4, 0,   // anchor 0: columns 0 and 1
                        0, 3, 0, 0, 4, 0};  // anchor 1
  float w[4];
  cpu::SoftmaxOverAnchors(sums, 2, 2, 3, 1, 0.5f, false, 1.f, w);  // distances halved
  const double e = std::exp(-1.0);                                 // (3 - 1) * 0.5
  EXPECT_NEAR(w[0], 1 / (1 + e), 1e-6);
  EXPECT_NEAR(w[2], e / (1 + e), 1e-6);
  EXPECT_NEAR(w[1], 0.5, 1e-6);
  EXPECT_NEAR(w[3], 0.5, 1e-6);
  const float squares[] = {4, 16};  // root: distances 2 and 4, temperature 2
  cpu::SoftmaxOverAnchors(squares, 2, 1, 1, 0, 1.f, true, 2.f, w);
  EXPECT_NEAR(w[0], 1 / (1 + e), 1e-6);
}

#if KVCOMM_HAVE_CUDA
TEST(AnchorDistancesCuda, MatchesCpuOnRandomSegments) {
  if (!CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU: " << CudaDeviceDescription();
  RealignShape s{3, 2, 41, 128, 4};
  auto base = kvcomm::testing::RandomNormal(s.SegmentElements(), 11, 1.0f, true);
  auto anchors = kvcomm::testing::RandomNormal(4 * s.SegmentElements(), 12, 1.0f, true);
  std::vector<float> want(4 * 41 * 3), got(want.size());
  cpu::AnchorDistances(s, base.data(), anchors.data(), want.data());
  auto upload_bf16 = [](const std::vector<float>& v) {
    std::vector<uint16_t> bits(v.size());
    for (size_t i = 0; i < v.size(); ++i) bits[i] = FloatToBFloat16(v[i]);
    auto buffer = std::move(DeviceBuffer::Allocate(bits.size() * 2)).value();
    EXPECT_TRUE(CopyHostToDevice(buffer.data(), bits.data(), bits.size() * 2).ok());
    return buffer;
  };
  auto d_base = upload_bf16(base), d_anchors = upload_bf16(anchors);
  auto d_out = std::move(DeviceBuffer::Allocate(got.size() * 4)).value();
  ASSERT_EQ(cuda::LaunchAnchorDistances(s.layers, s.kv_heads, s.tokens, s.head_dim, s.anchors,
                                        reinterpret_cast<cuda::bf16*>(d_base.data()),
                                        reinterpret_cast<cuda::bf16*>(d_anchors.data()),
                                        reinterpret_cast<float*>(d_out.data()), nullptr),
            cudaSuccess);
  ASSERT_TRUE(CopyDeviceToHost(got.data(), d_out.data(), got.size() * 4).ok());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4 * want[i] + 1e-3) << i;

  std::vector<float> want_channels(4 * s.Channels()), got_channels(want_channels.size());
  cpu::AnchorChannelDistances(s, base.data(), anchors.data(), want_channels.data());
  auto d_channels = std::move(DeviceBuffer::Allocate(got_channels.size() * 4)).value();
  ASSERT_EQ(
      cuda::LaunchAnchorChannelDistances(s.layers, s.kv_heads, s.tokens, s.head_dim, s.anchors,
                                         reinterpret_cast<cuda::bf16*>(d_base.data()),
                                         reinterpret_cast<cuda::bf16*>(d_anchors.data()),
                                         reinterpret_cast<float*>(d_channels.data()), nullptr),
      cudaSuccess);
  ASSERT_TRUE(
      CopyDeviceToHost(got_channels.data(), d_channels.data(), got_channels.size() * 4).ok());
  for (size_t i = 0; i < got_channels.size(); ++i)
    ASSERT_NEAR(got_channels[i], want_channels[i], 1e-4 * want_channels[i] + 1e-3) << i;

  // Weights from the same sums, per token and per channel.
  std::vector<float> want_w(4 * s.Channels()), got_w(want_w.size());
  const float scale = 1.f / (s.layers * s.kv_heads * s.head_dim);
  auto d_w = std::move(DeviceBuffer::Allocate(got_w.size() * 4)).value();
  cpu::SoftmaxOverAnchors(want.data(), 4, s.tokens, 3, 1, scale, false, 0.1f, want_w.data());
  ASSERT_EQ(cuda::LaunchSoftmaxOverAnchors(reinterpret_cast<float*>(d_out.data()), 4, s.tokens, 3,
                                           1, scale, false, 0.1f,
                                           reinterpret_cast<float*>(d_w.data()), nullptr),
            cudaSuccess);
  ASSERT_TRUE(CopyDeviceToHost(got_w.data(), d_w.data(), 4 * s.tokens * 4).ok());
  for (int64_t i = 0; i < 4 * s.tokens; ++i) ASSERT_NEAR(got_w[i], want_w[i], 1e-3) << i;
  cpu::SoftmaxOverAnchors(want_channels.data(), 4, s.Channels(), 1, 0, 1.f, true, 0.1f,
                          want_w.data());
  ASSERT_EQ(cuda::LaunchSoftmaxOverAnchors(reinterpret_cast<float*>(d_channels.data()), 4,
                                           s.Channels(), 1, 0, 1.f, true, 0.1f,
                                           reinterpret_cast<float*>(d_w.data()), nullptr),
            cudaSuccess);
  ASSERT_TRUE(CopyDeviceToHost(got_w.data(), d_w.data(), got_w.size() * 4).ok());
  for (size_t i = 0; i < got_w.size(); ++i) ASSERT_NEAR(got_w[i], want_w[i], 1e-3) << i;
}

class RealignCuda : public ::testing::TestWithParam<bool> {};

TEST_P(RealignCuda, MatchesCpuOnRandomSegments) {
  if (!CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU: " << CudaDeviceDescription();
  RealignShape s{4, 2, 37, 128, 3, 1, GetParam()};
  const auto inv_freq = InvFreq(128);
  auto base = kvcomm::testing::RandomNormal(s.SegmentElements(), 2, 1.0f, true),
       deltas = kvcomm::testing::RandomNormal(3 * s.SegmentElements(), 3, 1.0f, true);
  const size_t weight_count = s.per_channel_weights ? 3 * s.Channels() : 3 * 37;
  auto wk = kvcomm::testing::RandomNormal(weight_count, 4),
       wv = s.per_channel_weights ? wk : kvcomm::testing::RandomNormal(weight_count, 5);
  std::vector<int32_t> from(37), to(37);
  for (int t = 0; t < 37; ++t) {
    from[t] = 5 + t;
    to[t] = 700 + t;
  }
  std::vector<float> want(base.size());
  cpu::RealignKv(s, base.data(), from, to, inv_freq, deltas.data(), wk.data(), wv.data(),
                 want.data());

  auto upload = [](const void* data, size_t bytes) {
    auto buffer = std::move(DeviceBuffer::Allocate(bytes)).value();
    EXPECT_TRUE(CopyHostToDevice(buffer.data(), data, bytes).ok());
    return buffer;
  };
  auto to_bf16 = [](const std::vector<float>& v) {
    std::vector<uint16_t> bits(v.size());
    for (size_t i = 0; i < v.size(); ++i) bits[i] = FloatToBFloat16(v[i]);
    return bits;
  };
  auto base16 = to_bf16(base), deltas16 = to_bf16(deltas);
  auto d_base = upload(base16.data(), base16.size() * 2),
       d_deltas = upload(deltas16.data(), deltas16.size() * 2);
  auto d_from = upload(from.data(), from.size() * 4), d_to = upload(to.data(), to.size() * 4);
  auto d_freq = upload(inv_freq.data(), inv_freq.size() * 4);
  auto d_wk = upload(wk.data(), wk.size() * 4), d_wv = upload(wv.data(), wv.size() * 4);
  std::vector<uint16_t> poison(base.size(), 0x7f7f);
  auto d_out = upload(poison.data(), poison.size() * 2);
  using cuda::bf16;
  ASSERT_EQ(cuda::LaunchRealignKv(
                s.layers, s.kv_heads, s.tokens, s.head_dim, s.anchors, s.first_blended_layer,
                s.per_channel_weights, reinterpret_cast<bf16*>(d_base.data()),
                reinterpret_cast<int32_t*>(d_from.data()), reinterpret_cast<int32_t*>(d_to.data()),
                reinterpret_cast<float*>(d_freq.data()), reinterpret_cast<bf16*>(d_deltas.data()),
                reinterpret_cast<float*>(d_wk.data()), reinterpret_cast<float*>(d_wv.data()),
                reinterpret_cast<bf16*>(d_out.data()), nullptr),
            cudaSuccess);
  std::vector<uint16_t> got(base.size());
  ASSERT_TRUE(CopyDeviceToHost(got.data(), d_out.data(), got.size() * 2).ok());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(BFloat16ToFloat(got[i]), want[i], std::abs(want[i]) / 64 + 2e-2) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(WeightLayouts, RealignCuda, ::testing::Values(false, true));
#endif

}  // namespace
}  // namespace kvcomm::kernels
