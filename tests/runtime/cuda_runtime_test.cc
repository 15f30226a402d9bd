// The CUDA backend against the golden logits and against the CPU backend.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "agents/runtime/model.h"
#include "common/safetensors.h"
#include "tests/runtime/small_models.h"

namespace kvcomm::runtime {
namespace {

#define REQUIRE_GPU()            \
  if (!kernels::CudaAvailable()) \
  GTEST_SKIP() << "needs a CUDA GPU: " << kernels::CudaDeviceDescription()

double RelativeError(const std::vector<float>& got, const float* want, size_t n) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < n; ++i) {
    err = std::max(err, double{std::abs(got[i] - want[i])});
    ref = std::max(ref, double{std::abs(want[i])});
  }
  return err / ref;
}

TEST(CudaRuntime, WithoutAGpuTheBackendSaysSo) {
  if (kernels::CudaAvailable()) GTEST_SKIP() << "a GPU is present";
  auto model = Model::Load(KVCOMM_SOURCE_DIR "/tests/data/golden/llama", Device::kCuda);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), ErrorCode::kUnavailable);
}

TEST(CudaRuntime, GoldenLogitsWithinBf16Tolerance) {
  REQUIRE_GPU();
  for (const char* name : {"llama", "qwen2"}) {
    const std::string dir = std::string(KVCOMM_SOURCE_DIR "/tests/data/golden/") + name;
    auto model = Model::Load(dir, Device::kCuda);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    auto golden = SafetensorsFile::Open(dir + "/golden.safetensors");
    ASSERT_TRUE(golden.ok());
    std::vector<int32_t> ids(golden->Find("token_ids")->shape[0]);
    std::memcpy(ids.data(), golden->Find("token_ids")->data.data(), ids.size() * 4);
    const float* expected = reinterpret_cast<const float*>(golden->Find("logits")->data.data());
    auto cache = (*model)->NewCache(64);
    ASSERT_TRUE(cache.ok());
    auto logits = (*model)->Forward(ids, *cache, true);  // 24 tokens: the GEMM attention path
    ASSERT_TRUE(logits.ok()) << logits.status().ToString();
    EXPECT_LT(RelativeError(*logits, expected, logits->size()), 3e-2) << name;
    // Token by token through the streaming path gives the same logits within bf16 tolerance.
    auto stepwise = (*model)->NewCache(64);
    for (size_t t = 0; t < ids.size(); ++t) {
      auto step = (*model)->Forward(std::span(&ids[t], 1), *stepwise);
      ASSERT_TRUE(step.ok());
      EXPECT_LT(RelativeError(*step, expected + t * step->size(), step->size()), 3e-2)
          << name << " token " << t;
    }
  }
}

TEST(CudaRuntime, MatchesCpuOnARandomModelAndReusesExportedKvExactly) {
  REQUIRE_GPU();
  const ModelConfig config = testing::SmallLlamaConfig(4);
  const ModelWeights weights = testing::Bf16RoundedWeights(config, 5);
  auto cpu = Model::FromWeights(config, weights, Device::kCpu);
  auto gpu = Model::FromWeights(config, weights, Device::kCuda);
  ASSERT_TRUE(cpu.ok() && gpu.ok()) << gpu.status().ToString();
  EXPECT_EQ((*cpu)->fingerprint(), (*gpu)->fingerprint());
  std::mt19937 rng(1);
  std::vector<int32_t> ids(300);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % 512);

  auto cpu_cache = (*cpu)->NewCache(512);
  auto gpu_cache = (*gpu)->NewCache(512);
  auto a = (*cpu)->Forward(ids, *cpu_cache, true);
  auto b = (*gpu)->Forward(ids, *gpu_cache, true);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT(RelativeError(*b, a->data(), a->size()), 5e-2);

  // GPU KV exported as bf16 and imported into a fresh GPU cache continues exactly the same.
  auto segment = gpu_cache->Export(100, 300, DType::kBF16);
  ASSERT_TRUE(segment.ok());
  auto reused = (*gpu)->NewCache(512);
  auto recompute = (*gpu)->NewCache(512);
  ASSERT_TRUE((*gpu)->Forward(std::span(ids).first(100), *reused).ok());
  ASSERT_TRUE((*gpu)->Forward(std::span(ids).first(100), *recompute).ok());
  ASSERT_TRUE((*gpu)->Forward(std::span(ids).subspan(100), *recompute).ok());
  auto recomputed_segment = recompute->Export(100, 300, DType::kBF16);
  ASSERT_TRUE(recomputed_segment.ok());
  ASSERT_TRUE(reused->Import(reused->SegmentLayout(200, DType::kBF16), segment->span(), 100).ok());
  const int32_t next = 7;
  auto x = (*gpu)->Forward(std::span(&next, 1), *reused);
  auto y = (*gpu)->Forward(std::span(&next, 1), *recompute);
  ASSERT_TRUE(x.ok() && y.ok());
  // The segment was computed in one 300-token pass there and in 100 + 200 here: equal KV means
  // equal logits, bit for bit.
  if (std::memcmp(segment->data(), recomputed_segment->data(), segment->size()) == 0) {
    EXPECT_EQ(*x, *y);
  } else {
    EXPECT_LT(RelativeError(*x, y->data(), y->size()), 2e-2);
  }
  // And the GPU cache exports into the CPU backend's cache.
  auto cpu_reused = (*cpu)->NewCache(512);
  EXPECT_TRUE(
      cpu_reused->Import(cpu_reused->SegmentLayout(200, DType::kBF16), segment->span(), 100).ok());
}

TEST(CudaRuntime, Bf16SegmentsMoveAsIsFromHostOrDeviceMemory) {
  REQUIRE_GPU();
  auto model = Model::Load(KVCOMM_SOURCE_DIR "/tests/data/golden/llama", Device::kCuda);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  std::vector<int32_t> ids(20);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(3 + 7 * i % 50);
  auto cache = (*model)->NewCache(64);
  ASSERT_TRUE(cache.ok());
  ASSERT_TRUE((*model)->Forward(ids, *cache).ok());
  // The bf16 fast path and the fp32 path (row by row, converted) export the same values.
  auto fast = cache->Export(4, 17, DType::kBF16);
  auto slow = cache->Export(4, 17, DType::kF32);
  ASSERT_TRUE(fast.ok() && slow.ok());
  const size_t n = slow->size() / 4;
  const auto* bf = reinterpret_cast<const uint16_t*>(fast->data());
  const auto* f32 = reinterpret_cast<const float*>(slow->data());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(BFloat16ToFloat(bf[i]), f32[i]) << i;
  // Imported at another position, from host memory and from device memory, it exports back
  // bit for bit.
  const KvLayout layout = cache->SegmentLayout(13, DType::kBF16);
  auto on_device = kernels::DeviceBuffer::Allocate(fast->size());
  ASSERT_TRUE(on_device.ok());
  ASSERT_TRUE(kernels::CopyHostToDevice(on_device->data(), fast->data(), fast->size()).ok());
  for (const std::byte* source : {fast->data(), static_cast<const std::byte*>(on_device->data())}) {
    auto other = (*model)->NewCache(64);
    ASSERT_TRUE(other.ok());
    ASSERT_TRUE(other->Import(layout, std::span(source, fast->size()), 30).ok());
    EXPECT_FALSE(other->IsValid(29));
    EXPECT_TRUE(other->IsValid(42));
    auto back = other->Export(30, 43, DType::kBF16);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(std::memcmp(back->data(), fast->data(), fast->size()), 0);
    // Out into device memory (one kernel) as well.
    auto device_back = kernels::DeviceBuffer::Allocate(fast->size());
    ASSERT_TRUE(device_back.ok());
    ASSERT_TRUE(other->CopyOut(30, 43, device_back->data()).ok());
    std::vector<std::byte> host_back(fast->size());
    ASSERT_TRUE(
        kernels::CopyDeviceToHost(host_back.data(), device_back->data(), host_back.size()).ok());
    EXPECT_EQ(std::memcmp(host_back.data(), fast->data(), fast->size()), 0);
  }
}

}  // namespace
}  // namespace kvcomm::runtime
