#include "common/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/kv_layout.h"

namespace kvcomm {
namespace {

TEST(DType, HalfConversionMatchesKnownBitPatterns) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);               // largest finite half
  EXPECT_EQ(FloatToHalf(1e6f), 0x7c00);                   // overflow -> +inf
  EXPECT_EQ(FloatToHalf(5.960464477539063e-8f), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(1.0f + 1.0f / 2048), 0x3c00);     // tie rounds to even
  EXPECT_EQ(FloatToHalf(1.0f + 3.0f / 2048), 0x3c02);
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(NAN))));
}

TEST(DType, BFloat16ConversionMatchesKnownBitPatterns) {
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBFloat16(-3.0f), 0xc040);
  EXPECT_EQ(BFloat16ToFloat(0x4049), 3.140625f);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(NAN))));
}

TEST(DType, RandomValuesRoundTripWithinHalfAndBf16Precision) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0, 10);
  for (int i = 0; i < 10000; ++i) {
    float x = dist(rng);
    EXPECT_NEAR(HalfToFloat(FloatToHalf(x)), x, std::abs(x) * 0x1p-11f + 1e-7f) << x;
    EXPECT_NEAR(BFloat16ToFloat(FloatToBFloat16(x)), x, std::abs(x) * 0x1p-8f + 1e-30f) << x;
  }
}

TEST(DType, EveryHalfBitPatternSurvivesFloatRoundTrip) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    float f = HalfToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToHalf(f), bits) << std::hex << bits;
  }
}

TEST(DType, ParsesSafetensorsNamesAndRejectsOthers) {
  EXPECT_EQ(*ParseDType("BF16"), DType::kBF16);
  auto bad = ParseDType("F64");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("F64"), std::string::npos);
}

TEST(KvLayout, ValidateNamesTheBadField) {
  KvLayout layout{32, 8, 100, 128, DType::kBF16};
  EXPECT_TRUE(layout.Validate().ok());
  EXPECT_EQ(layout.PayloadBytes(), 32ull * 2 * 8 * 100 * 128 * 2);
  layout.kv_heads = 0;
  Status s = layout.Validate();
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(s.message().find("kv_heads"), std::string::npos);
  layout = {1, 1, 1, 1, DType::kI32};
  EXPECT_FALSE(layout.Validate().ok());
}

TEST(KvLayout, OffsetFollowsLayerKvHeadTokenOrder) {
  KvLayout layout{2, 3, 5, 4, DType::kF16};
  EXPECT_EQ(layout.Offset(0, 0, 0, 1), 4u * 2);
  EXPECT_EQ(layout.Offset(0, 1, 0, 0), 3u * 5 * 4 * 2);
  EXPECT_EQ(layout.Offset(1, 0, 0, 0), 2u * 3 * 5 * 4 * 2);
  EXPECT_EQ(layout.Offset(1, 1, 2, 4) + 4 * 2, layout.PayloadBytes());
}

}  // namespace
}  // namespace kvcomm
