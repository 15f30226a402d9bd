#include <gtest/gtest.h>

#include <cstring>

#include "kernels/device.h"
#include "kernels/ops.h"
#include "tests/kernels/random_values.h"

namespace kvcomm::kernels {
namespace {

float RoundingError(DType d) {
  return d == DType::kBF16 ? 0x1p-8f : d == DType::kF16 ? 0x1p-11f : 0.f;
}

TEST(ConvertDTypeCpu, MatchesScalarConversionsForEveryPair) {
  const auto src = kvcomm::testing::RandomNormal(1000, 1, 3.f);
  for (DType from : {DType::kF32, DType::kF16, DType::kBF16}) {
    std::vector<std::byte> a(src.size() * DTypeSize(from));
    ASSERT_TRUE(ConvertDType({const_cast<float*>(src.data()), DType::kF32, {1000}},
                             {a.data(), from, {1000}})
                    .ok());
    for (DType to : {DType::kF32, DType::kF16, DType::kBF16}) {
      std::vector<std::byte> b(src.size() * DTypeSize(to), std::byte{0xAB});  // poisoned
      ASSERT_TRUE(ConvertDType({a.data(), from, {1000}}, {b.data(), to, {1000}}).ok());
      std::vector<float> back(src.size());
      ASSERT_TRUE(ConvertDType({b.data(), to, {1000}}, {back.data(), DType::kF32, {1000}}).ok());
      for (size_t i = 0; i < src.size(); ++i) {
        // Each narrowing rounds once (half an ulp, relative); f32 -> from -> to rounds twice.
        float tol = RoundingError(from) + RoundingError(to);
        ASSERT_NEAR(back[i], src[i], std::abs(src[i]) * tol + 1e-6f)
            << DTypeName(from) << "->" << DTypeName(to) << " at " << i;
      }
    }
  }
}

TEST(ConvertDType, RejectsMismatchedShapesAndIntegerTypes) {
  std::vector<float> a(4), b(5);
  EXPECT_EQ(ConvertDType({a.data(), DType::kF32, {4}}, {b.data(), DType::kF32, {5}}).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(ConvertDType({a.data(), DType::kI32, {4}}, {b.data(), DType::kF32, {4}}).code(),
            ErrorCode::kInvalidArgument);
}

TEST(ConvertDTypeCuda, MatchesCpuReferenceOnRandomInputs) {
  if (!CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU: " << CudaDeviceDescription();
  for (size_t n : {1ul, 1000ul, 1ul << 20}) {
    const auto src = kvcomm::testing::RandomNormal(n, static_cast<uint32_t>(n), 3.f);
    for (DType to : {DType::kF16, DType::kBF16, DType::kF32}) {
      const size_t out_bytes = n * DTypeSize(to);
      std::vector<std::byte> expected(out_bytes);
      cpu::ConvertDType({const_cast<float*>(src.data()), DType::kF32, {int64_t(n)}},
                        {expected.data(), to, {int64_t(n)}});
      auto d_src = DeviceBuffer::Allocate(n * 4);
      auto d_dst = DeviceBuffer::Allocate(out_bytes);
      ASSERT_TRUE(d_src.ok() && d_dst.ok());
      std::vector<std::byte> poison(out_bytes, std::byte{0x7F});
      ASSERT_TRUE(CopyHostToDevice(d_dst->data(), poison.data(), out_bytes).ok());
      ASSERT_TRUE(CopyHostToDevice(d_src->data(), src.data(), n * 4).ok());
      Status s = ConvertDType({d_src->data(), DType::kF32, {int64_t(n)}, Device::kCuda},
                              {d_dst->data(), to, {int64_t(n)}, Device::kCuda});
      ASSERT_TRUE(s.ok()) << s.ToString();
      std::vector<std::byte> got(out_bytes);
      ASSERT_TRUE(CopyDeviceToHost(got.data(), d_dst->data(), out_bytes).ok());
      // Both sides round to nearest even, so the bits agree exactly.
      EXPECT_EQ(std::memcmp(got.data(), expected.data(), out_bytes), 0)
          << "n=" << n << " to " << DTypeName(to);
    }
  }
}

}  // namespace
}  // namespace kvcomm::kernels
