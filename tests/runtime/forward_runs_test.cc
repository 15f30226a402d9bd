// Model::ForwardRuns: the gaps of a prompt with imported KV computed in one pass, against the
// same prompt computed in full and gap by gap, on each backend present; and its input checks.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "agents/runtime/model.h"
#include "tests/runtime/small_models.h"

namespace kvcomm::runtime {
namespace {

double RelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, double{std::abs(got[i] - want[i])});
    ref = std::max(ref, double{std::abs(want[i])});
  }
  return err / ref;
}

std::unique_ptr<Model> SmallModel(Device device) {
  const ModelConfig config = testing::SmallLlamaConfig(3);
  auto model = Model::FromWeights(config, testing::Bf16RoundedWeights(config, 5), device);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return model.ok() ? std::move(model).value() : nullptr;
}

class ForwardRunsTest : public ::testing::TestWithParam<Device> {};

TEST_P(ForwardRunsTest, GapsInOnePassMatchTheFullPromptAndGapByGap) {
  if (GetParam() == Device::kCuda && !kernels::CudaAvailable())
    GTEST_SKIP() << "needs a CUDA GPU: " << kernels::CudaDeviceDescription();
  auto model = SmallModel(GetParam());
  ASSERT_TRUE(model);
  std::mt19937 rng(3);
  std::vector<int32_t> ids(130);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % 512);
  const DType dtype = GetParam() == Device::kCpu ? DType::kF32 : DType::kBF16;
  const double tolerance = GetParam() == Device::kCpu ? 1e-4 : 3e-2;

  auto full = *model->NewCache(160);
  const auto want = *model->Forward(ids, full);
  const auto imported = *full.Export(48, 122, dtype);  // between the two gaps

  // The prompt's first 40 tokens computed, [48, 122) imported, [40, 48) and [122, 130) left.
  auto prepare = [&] {
    auto cache = *model->NewCache(160);
    EXPECT_TRUE(model->Forward(std::span(ids).first(40), cache).ok());
    EXPECT_TRUE(cache.Import(cache.SegmentLayout(74, dtype), imported.span(), 48).ok());
    return cache;
  };
  const std::vector<Model::TokenRun> runs = {{std::span(ids).subspan(40, 8), 40},
                                             {std::span(ids).subspan(122), 122}};
  auto batched = prepare();
  auto logits = model->ForwardRuns(runs, batched);
  ASSERT_TRUE(logits.ok()) << logits.status().ToString();
  EXPECT_LT(RelativeError(*logits, want), tolerance);
  EXPECT_EQ(batched.length(), 130);

  auto stepwise = prepare();
  ASSERT_TRUE(model->Forward(runs[0].tokens, stepwise).ok());
  ASSERT_EQ(stepwise.length(), 122);
  const auto one_by_one = *model->Forward(runs[1].tokens, stepwise);
  EXPECT_LT(RelativeError(*logits, one_by_one), tolerance);
  // Both wrote the first gap's KV as the full prompt did.
  const auto gap = [&](const KvCache& c) {
    auto kv = *c.Export(40, 48, DType::kF32);
    const float* f = reinterpret_cast<const float*>(kv.data());
    return std::vector<float>(f, f + kv.size() / 4);
  };
  EXPECT_LT(RelativeError(gap(batched), gap(full)), tolerance);
  EXPECT_LT(RelativeError(gap(stepwise), gap(full)), tolerance);
}

TEST_P(ForwardRunsTest, RunsMustFillGapsInOrder) {
  if (GetParam() == Device::kCuda && !kernels::CudaAvailable())
    GTEST_SKIP() << "needs a CUDA GPU: " << kernels::CudaDeviceDescription();
  auto model = SmallModel(GetParam());
  ASSERT_TRUE(model);
  const std::vector<int32_t> a = {1, 2, 3}, b = {4, 5}, bad = {9999};
  auto cache = *model->NewCache(32);
  auto expect_invalid = [&](std::vector<Model::TokenRun> runs, const char* why) {
    auto r = model->ForwardRuns(runs, cache);
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument) << why;
  };
  expect_invalid({}, "no runs");
  expect_invalid({{a, 1}}, "not at the first free position");
  expect_invalid({{a, 0}, {b, 5}}, "positions 3 and 4 hold no KV");
  expect_invalid({{a, 0}, {b, 2}}, "overlapping runs");
  expect_invalid({{a, 0}, {b, 31}}, "past the capacity");
  expect_invalid({{bad, 0}}, "token outside the vocabulary");
  EXPECT_EQ(cache.length(), 0);  // nothing was computed
  ASSERT_TRUE(model->ForwardRuns(std::vector<Model::TokenRun>{{a, 0}, {b, 3}}, cache).ok());
  EXPECT_EQ(cache.length(), 5);
}

INSTANTIATE_TEST_SUITE_P(Backends, ForwardRunsTest, ::testing::Values(Device::kCpu, Device::kCuda),
                         [](const auto& info) {
                           return std::string(info.param == Device::kCpu ? "Cpu" : "Cuda");
                         });

}  // namespace
}  // namespace kvcomm::runtime
