// Device delivery in kvcommd: the lease arena's rules, and the anchor service's GPU path
// (DeviceMath) against its host path (HostMath) on the same pools: the same decisions, and KV
// equal within bf16 rounding. Without a GPU only the refusals are checked.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <thread>

#include "common/dtype.h"
#include "daemon/anchor_service.h"
#include "daemon/device_leases.h"

namespace kvcomm::daemon {
namespace {

constexpr uint32_t kLayers = 3, kHeads = 2, kDim = 32;
const std::vector<int32_t> kBasePrefix = {1, 2};

KvLayout Geometry(uint32_t tokens) { return {kLayers, kHeads, tokens, kDim, DType::kBF16}; }

KvF32 Random(uint32_t tokens, uint32_t seed, float stddev = 1.f) {
  KvLayout layout = Geometry(tokens);
  layout.dtype = DType::kF32;
  KvF32 kv{layout, std::vector<float>(layout.PayloadBytes() / 4)};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0, stddev);
  for (auto& x : kv.data) x = normal(rng);
  return kv;
}

KvF32 Plus(const KvF32& a, const KvF32& b, float scale) {
  KvF32 out = a;
  for (size_t i = 0; i < out.data.size(); ++i) out.data[i] += scale * b.data[i];
  return out;
}

std::vector<int32_t> Tokens(int32_t first, int32_t count) {
  std::vector<int32_t> t(count);
  std::iota(t.begin(), t.end(), first);
  return t;
}

TEST(DeviceLeases, LendReleaseExpireAndRefuse) {
  if (!kernels::CudaAvailable()) {
    EXPECT_EQ(DeviceLeases::Create({1 << 20, 1000}).status().code(), ErrorCode::kUnavailable);
    GTEST_SKIP() << "needs a CUDA GPU for the rest: " << kernels::CudaDeviceDescription();
  }
  EXPECT_EQ(DeviceLeases::Create({0, 1000}).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(DeviceLeases::Create({1 << 20, 0}).status().code(), ErrorCode::kInvalidArgument);
  auto leases = DeviceLeases::Create({1 << 20, 50});
  ASSERT_TRUE(leases.ok()) << leases.status().ToString();
  auto& l = **leases;
  EXPECT_EQ(l.ipc_handle().size(), kernels::kIpcHandleBytes);
  EXPECT_EQ(l.device_uuid().size(), 32u);
  auto a = l.Acquire(600 << 10);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(l.Acquire(600 << 10).status().code(), ErrorCode::kResourceExhausted);
  ASSERT_TRUE(l.Release(a->id).ok());
  EXPECT_EQ(l.Release(a->id).code(), ErrorCode::kNotFound);
  auto b = l.Acquire(600 << 10);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(l.active(), 1u);
  // Unreleased past its time to live, it is reclaimed when the space is needed.
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  auto c = l.Acquire(600 << 10);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(l.expired(), 1u);
  EXPECT_EQ(l.Release(b->id).code(), ErrorCode::kNotFound);
  EXPECT_NE(b->id, c->id);
}

class DeviceReuseTest : public ::testing::Test {
 protected:
  // With a GPU: a GPU tier and a lease arena; without: the host path alone.
  void SetUp() override {
    const bool gpu = kernels::CudaAvailable();
    kvstore::StoreOptions options;
    options.persist = false;
    options.gpu_capacity_bytes = gpu ? 64 << 20 : 0;
    options.host_capacity_bytes = 64 << 20;
    store_ = std::move(kvstore::TieredStore::Open(options)).value();
    if (gpu) leases_ = std::move(DeviceLeases::Create({16 << 20, 60000})).value();
    service_ = std::make_unique<AnchorService>(*store_, config_, leases_.get());
    model_.geometry = Geometry(0);
    model_.inv_freq.resize(kDim / 2);
    for (uint32_t i = 0; i < kDim / 2; ++i)
      model_.inv_freq[i] = std::pow(10000.f, -2.f * static_cast<float>(i) / kDim);
    model_.base_prefix = kBasePrefix;
  }

  void Put(const SegmentKey& key, const std::vector<int32_t>& tokens, const KvF32& kv,
           int32_t first_position, DType dtype = DType::kBF16) {
    kvstore::SegmentMeta meta;
    meta.context_key = key;
    meta.content_key = ComputeContentKey(*scope_.model, scope_.name_space, tokens);
    meta.fingerprint = *scope_.model;
    meta.name_space = scope_.name_space;
    meta.layout = Geometry(kv.layout.tokens);
    meta.layout.dtype = dtype;
    meta.token_ids = tokens;
    meta.first_position = first_position;
    Blob payload = *EncodeKv(kv, dtype);
    meta.payload_bytes = payload.size();
    meta.checksum = Checksum64(payload.span());
    ASSERT_TRUE(store_->Put(std::move(meta), std::move(payload)).ok());
  }
  void PutBase(const std::vector<int32_t>& tokens, const KvF32& kv, DType dtype = DType::kBF16) {
    Put(ComputeContextKey(*scope_.model, scope_.name_space, TokenPrefixHash(kBasePrefix), tokens),
        tokens, kv, static_cast<int32_t>(kBasePrefix.size()), dtype);
  }

  // A stored lead-in, the placeholder, the template segment after it, the agent's suffix.
  PlanInput Prompt(const std::string& agent, const std::vector<int32_t>& placeholder) {
    PlanInput input{agent, model_, {}};
    input.segments.push_back({false, "", Tokens(100, 5)});
    input.segments.push_back({true, "slot", placeholder});
    input.segments.push_back({false, "", {200, 201, 202, 203}});
    input.segments.push_back({false, "", {300}});
    return input;
  }

  void MakeAnchor(const std::vector<int32_t>& placeholder, const KvF32& base, uint32_t seed) {
    PutBase(placeholder, base);
    auto plan = service_->Plan(scope_, Prompt("a", placeholder),
                               leases_ ? Delivery::kDevice : Delivery::kHost);
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    ASSERT_TRUE(plan->segments[1].report_actual);
    for (const auto& p : plan->segments) {
      if (p.kv.lease) {
        ASSERT_TRUE(leases_->Release(p.kv.lease->id).ok());
      }
    }
    const int32_t position = 5;
    ActualInput report{"a",
                       "slot",
                       model_,
                       placeholder,
                       position,
                       *EncodeKv(Plus(base, Random(base.layout.tokens, seed), 0.2f), DType::kBF16),
                       {200, 201, 202, 203},
                       position + static_cast<int32_t>(placeholder.size()),
                       *EncodeKv(Random(4, seed + 1), DType::kBF16)};
    ASSERT_TRUE(service_->ReportActual(scope_, report).ok());
  }

  // Two anchors with deltas of agent "a", a stored lead-in, and a new placeholder close to the
  // first anchor (the second is longer: cut to its 8 tokens).
  void MakePools() {
    Put(ComputeContextKey(*scope_.model, scope_.name_space, TokenPrefixHash({}), Tokens(100, 5)),
        Tokens(100, 5), Random(5, 1), 0);
    const KvF32 base1 = Random(8, 11), base2 = Random(10, 12);
    MakeAnchor(Tokens(20, 8), base1, 21);
    MakeAnchor(Tokens(40, 10), base2, 22);
    PutBase(Tokens(60, 8), kNewBase);
  }
  const KvF32 kNewBase = Plus(Random(8, 11), Random(8, 13), 0.05f);  // close to the first anchor
  const std::vector<Decision> kWanted = {Decision::kExact, Decision::kRealigned,
                                         Decision::kRealigned, Decision::kPrefill};

  std::vector<float> LeasedKv(const SegmentPlanOutput& plan) {
    EXPECT_TRUE(plan.kv.lease.has_value());
    std::vector<uint16_t> bits(plan.kv.lease->bytes / 2);
    EXPECT_TRUE(
        kernels::CopyDeviceToHost(bits.data(), plan.kv.lease->data, plan.kv.lease->bytes).ok());
    std::vector<float> out(bits.size());
    for (size_t i = 0; i < bits.size(); ++i) out[i] = BFloat16ToFloat(bits[i]);
    return out;
  }
  static std::vector<float> HostKv(const SegmentPlanOutput& plan) {
    return DecodeKv(plan.kv.layout, plan.kv.kv.span())->data;
  }

  // The same pools and plan in a kvcommd without a GPU tier (deltas and plan on the host),
  // which from then on is the fixture's store and service.
  Result<PromptPlanOutput> HostOnlyPlan() {
    gpu_store_ = std::move(store_);
    gpu_leases_ = std::move(leases_);
    gpu_service_ = std::move(service_);
    kvstore::StoreOptions options;
    options.persist = false;
    options.host_capacity_bytes = 64 << 20;
    store_ = std::move(kvstore::TieredStore::Open(options)).value();
    service_ = std::make_unique<AnchorService>(*store_, config_);
    MakePools();
    return service_->Plan(scope_, Prompt("a", Tokens(60, 8)), Delivery::kHost);
  }

  // Declared first so that they go last: the GPU kvcommd HostOnlyPlan set aside.
  std::unique_ptr<kvstore::TieredStore> gpu_store_;
  std::unique_ptr<DeviceLeases> gpu_leases_;
  std::unique_ptr<AnchorService> gpu_service_;
  std::unique_ptr<kvstore::TieredStore> store_;
  std::unique_ptr<DeviceLeases> leases_;
  AnchorPoolConfig config_;
  std::unique_ptr<AnchorService> service_;
  ReuseModel model_;
  kvstore::Scope scope_{"ns", Hash128{7, 7}};
};

TEST_F(DeviceReuseTest, Bf16PoolsServeHostPlans) {
  MakePools();
  auto host = service_->Plan(scope_, Prompt("a", Tokens(60, 8)), Delivery::kHost);
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  for (size_t i = 0; i < kWanted.size(); ++i) {
    EXPECT_EQ(host->segments[i].decision, kWanted[i]) << i;
    EXPECT_FALSE(host->segments[i].kv.lease);
    if (kWanted[i] != Decision::kPrefill) {
      EXPECT_EQ(host->segments[i].kv.layout.dtype, DType::kBF16);
    }
  }
}

TEST_F(DeviceReuseTest, DevicePlansMatchHostPlans) {
  if (!kernels::CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU";
  MakePools();  // with a GPU tier, ReportActual computes the deltas there
  auto device = service_->Plan(scope_, Prompt("a", Tokens(60, 8)), Delivery::kDevice);
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  // Frames from the same kvcommd: GPU arithmetic too, copied out (no lease held).
  auto frames = service_->Plan(scope_, Prompt("a", Tokens(60, 8)), Delivery::kHost);
  ASSERT_TRUE(frames.ok()) << frames.status().ToString();
  DeviceLeases* leases = leases_.get();
  const size_t device_leases = leases->active();
  auto host = HostOnlyPlan();
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  size_t leased = 0;
  for (size_t i = 0; i < kWanted.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ(host->segments[i].decision, kWanted[i]);
    ASSERT_EQ(device->segments[i].decision, kWanted[i]);
    ASSERT_EQ(frames->segments[i].decision, kWanted[i]);
    EXPECT_FALSE(frames->segments[i].kv.lease);
    if (kWanted[i] == Decision::kPrefill) {
      EXPECT_FALSE(device->segments[i].kv.lease);
      continue;
    }
    ++leased;
    EXPECT_EQ(device->segments[i].kv.layout, host->segments[i].kv.layout);
    const auto expected = HostKv(host->segments[i]);
    for (const auto& got : {LeasedKv(device->segments[i]), HostKv(frames->segments[i])}) {
      ASSERT_EQ(got.size(), expected.size());
      double worst = 0;
      for (size_t k = 0; k < got.size(); ++k)
        worst =
            std::max(worst, std::abs(double{got[k]} - expected[k]) / (1 + std::abs(expected[k])));
      EXPECT_LT(worst, 2e-2);  // bf16 arithmetic vs fp32 then bf16
    }
  }
  EXPECT_EQ(device_leases, leased);
  for (const auto& p : device->segments)
    ASSERT_TRUE(!p.kv.lease || leases->Release(p.kv.lease->id).ok());
  EXPECT_EQ(leases->active(), 0u);
}

TEST_F(DeviceReuseTest, FramesPlansServeSegmentsTheGpuCannotUseInPlace) {
  if (!kernels::CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU";
  MakePools();
  // Another placeholder with the new base's very values, stored as fp32: device plans refuse
  // it, frames plans realign it on the host (with the anchors' bf16 deltas from the GPU tier).
  const KvF32 same_values = *DecodeKv(Geometry(8), EncodeKv(kNewBase, DType::kBF16)->span());
  PutBase(Tokens(70, 8), same_values, DType::kF32);
  EXPECT_EQ(service_->Plan(scope_, Prompt("a", Tokens(70, 8)), Delivery::kDevice).status().code(),
            ErrorCode::kFailedPrecondition);
  EXPECT_EQ(leases_->active(), 0u);
  auto frames = service_->Plan(scope_, Prompt("a", Tokens(70, 8)), Delivery::kHost);
  ASSERT_TRUE(frames.ok()) << frames.status().ToString();
  EXPECT_EQ(leases_->active(), 0u);
  auto device = service_->Plan(scope_, Prompt("a", Tokens(60, 8)), Delivery::kDevice);
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  for (size_t i = 0; i < kWanted.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ(frames->segments[i].decision, kWanted[i]);
    ASSERT_EQ(device->segments[i].decision, kWanted[i]);
    if (kWanted[i] == Decision::kPrefill) continue;
    EXPECT_EQ(frames->segments[i].kv.layout, device->segments[i].kv.layout);
    const auto got = HostKv(frames->segments[i]);
    const auto expected = LeasedKv(device->segments[i]);
    ASSERT_EQ(got.size(), expected.size());
    double worst = 0;
    for (size_t k = 0; k < got.size(); ++k)
      worst = std::max(worst, std::abs(double{got[k]} - expected[k]) / (1 + std::abs(expected[k])));
    EXPECT_LT(worst, 2e-2);  // fp32 then bf16 vs bf16 arithmetic
    ASSERT_TRUE(leases_->Release(device->segments[i].kv.lease->id).ok());
  }
}

TEST_F(DeviceReuseTest, AFailedDevicePlanGivesItsLeasesBack) {
  if (!kernels::CudaAvailable()) GTEST_SKIP() << "needs a CUDA GPU";
  // An exact hit stored as fp32 cannot be served in place.
  Put(ComputeContextKey(*scope_.model, scope_.name_space, TokenPrefixHash({}), Tokens(100, 5)),
      Tokens(100, 5), Random(5, 1), 0);
  PlanInput input = Prompt("a", Tokens(20, 8));
  const std::vector<int32_t> after_lead = Tokens(20, 8);
  kvstore::SegmentMeta meta;
  std::vector<int32_t> lead = Tokens(100, 5);
  meta.context_key =
      ComputeContextKey(*scope_.model, scope_.name_space, TokenPrefixHash(lead), after_lead);
  meta.content_key = ComputeContentKey(*scope_.model, scope_.name_space, after_lead);
  meta.fingerprint = *scope_.model;
  meta.name_space = scope_.name_space;
  meta.layout = Random(8, 3).layout;  // fp32
  Blob payload = *EncodeKv(Random(8, 3), DType::kF32);
  meta.payload_bytes = payload.size();
  meta.checksum = Checksum64(payload.span());
  ASSERT_TRUE(store_->Put(std::move(meta), std::move(payload)).ok());
  auto plan = service_->Plan(scope_, input, Delivery::kDevice);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), ErrorCode::kFailedPrecondition) << plan.status().ToString();
  EXPECT_EQ(leases_->active(), 0u);  // the lead-in's lease went back
  // Frames serve it (exact hits go through the host path, in any stored dtype).
  auto frames = service_->Plan(scope_, input, Delivery::kHost);
  ASSERT_TRUE(frames.ok()) << frames.status().ToString();
  EXPECT_EQ(frames->segments[0].decision, Decision::kExact);
  EXPECT_EQ(frames->segments[1].decision, Decision::kExact);
  EXPECT_EQ(leases_->active(), 0u);
}

TEST(DeviceReuseRefusals, DeviceDeliveryNeedsAnArenaAndBf16) {
  kvstore::StoreOptions options;
  options.persist = false;
  auto store = std::move(kvstore::TieredStore::Open(options)).value();
  AnchorService service(*store, AnchorPoolConfig{});
  PlanInput input{"a", {Geometry(0), std::vector<float>(kDim / 2, 0.5f), kBasePrefix}, {}};
  input.segments.push_back({false, "", Tokens(100, 5)});
  auto plan = service.Plan({"ns", Hash128{7, 7}}, input, Delivery::kDevice);
  EXPECT_EQ(plan.status().code(), ErrorCode::kUnavailable);
  EXPECT_NE(plan.status().message().find("ipc.arena"), std::string::npos);
  EXPECT_TRUE(service.Plan({"ns", Hash128{7, 7}}, input, Delivery::kHost).ok());
}

}  // namespace
}  // namespace kvcomm::daemon
