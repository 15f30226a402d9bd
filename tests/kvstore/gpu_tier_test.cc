#include "kvstore/gpu_tier.h"

#include <gtest/gtest.h>

#include <cstring>

#include "kvstore/store.h"
#include "tests/kvstore/test_segments.h"

namespace kvcomm::kvstore {
namespace {

using kvcomm::testing::MakeSegment;

TEST(GpuTier, WithoutAGpuCreateSaysWhy) {
  if (kernels::CudaAvailable()) GTEST_SKIP() << "a GPU is present; this checks the no-GPU path";
  auto tier = GpuTier::Create(1 << 20);
  ASSERT_FALSE(tier.ok());
  EXPECT_EQ(tier.status().code(), ErrorCode::kUnavailable);
  StoreOptions options;
  options.gpu_capacity_bytes = 1 << 20;
  options.persist = false;
  auto store = TieredStore::Open(options);  // an explicit GPU capacity without a GPU is an error
  EXPECT_FALSE(store.ok());
}

TEST(GpuTier, StoresReadsAndErasesInDeviceMemory) {
  if (!kernels::CudaAvailable())
    GTEST_SKIP() << "needs a CUDA GPU: " << kernels::CudaDeviceDescription();
  auto a = MakeSegment(64, 1), b = MakeSegment(64, 2);
  auto tier = GpuTier::Create(a.payload.size() * 2 + 1024);
  ASSERT_TRUE(tier.ok()) << tier.status().ToString();
  ASSERT_TRUE((*tier)->Put(a.meta, a.payload).ok());
  ASSERT_TRUE((*tier)->Put(b.meta, b.payload).ok());
  EXPECT_TRUE((*tier)->Share(a.meta.context_key));
  auto read = (*tier)->Read(a.meta.context_key);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(std::memcmp(read->data(), a.payload.data(), a.payload.size()), 0);
  EXPECT_FALSE((*tier)->CanFit(a.payload.size()));
  EXPECT_EQ(*(*tier)->Coldest(), b.meta.context_key);
  ASSERT_TRUE((*tier)->Erase(b.meta.context_key).ok());
  EXPECT_TRUE((*tier)->CanFit(a.payload.size()));
}

TEST(GpuTier, StoreDemotesFromGpuToHostAndPromotesBack) {
  if (!kernels::CudaAvailable())
    GTEST_SKIP() << "needs a CUDA GPU: " << kernels::CudaDeviceDescription();
  auto a = MakeSegment(64, 1), b = MakeSegment(64, 2);
  StoreOptions options;
  options.persist = false;
  options.gpu_capacity_bytes = a.payload.size() + 512;  // one segment
  options.host_capacity_bytes = 1 << 20;
  auto store = TieredStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->Put(a.meta, a.payload).ok());
  ASSERT_TRUE((*store)->Put(b.meta, b.payload).ok());
  Scope scope{"test", std::nullopt};
  auto where = (*store)->Lookup(
      {{a.meta.context_key, KeyKind::kContext}, {b.meta.context_key, KeyKind::kContext}}, scope);
  EXPECT_EQ(where[0].tier, TierKind::kHost);
  EXPECT_EQ(where[1].tier, TierKind::kGpu);
  auto got = (*store)->Get(a.meta.context_key, KeyKind::kContext, scope);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(std::memcmp(got->payload.data(), a.payload.data(), a.payload.size()), 0);
  where = (*store)->Lookup({{a.meta.context_key, KeyKind::kContext}}, scope);
  EXPECT_EQ(where[0].tier, TierKind::kGpu);
  auto stats = (*store)->Stats();
  EXPECT_EQ(stats.promotions, 1u);
  EXPECT_EQ(stats.demotions, 2u);
  EXPECT_LE(stats.tiers[0].bytes, options.gpu_capacity_bytes);
  EXPECT_EQ(stats.tiers[1].segments, 1u);  // promotion moved a out of the host tier
}

TEST(GpuTier, GetOnDeviceServesInPlaceAndKeepsHeldBytesValid) {
  auto a = MakeSegment(64, 1), b = MakeSegment(64, 2);
  StoreOptions options;
  options.persist = false;
  options.host_capacity_bytes = 1 << 20;
  Scope scope{"test", std::nullopt};
  if (!kernels::CudaAvailable()) {
    auto store = TieredStore::Open(options);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Put(a.meta, a.payload).ok());
    EXPECT_EQ((*store)->GetOnDevice(a.meta.context_key, KeyKind::kContext, scope).status().code(),
              ErrorCode::kUnavailable);
    GTEST_SKIP() << "needs a CUDA GPU for the rest: " << kernels::CudaDeviceDescription();
  }
  options.gpu_capacity_bytes = a.payload.size() + 512;  // one segment
  auto store = TieredStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->Put(a.meta, a.payload).ok());
  ASSERT_TRUE((*store)->Put(b.meta, b.payload).ok());  // a goes down to the host tier
  EXPECT_EQ((*store)->GetOnDevice(b.meta.context_key, KeyKind::kContent, scope).status().code(),
            ErrorCode::kNotFound);

  // a comes back up (b goes down), and its device bytes are the payload.
  auto held = (*store)->GetOnDevice(a.meta.context_key, KeyKind::kContext, scope);
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  ASSERT_EQ(held->payload.size(), a.payload.size());
  auto where = (*store)->Lookup(
      {{a.meta.context_key, KeyKind::kContext}, {b.meta.context_key, KeyKind::kContext}}, scope);
  EXPECT_EQ(where[0].tier, TierKind::kGpu);
  EXPECT_EQ(where[1].tier, TierKind::kHost);
  EXPECT_EQ((*store)->Stats().promotions, 1u);

  // Deleted while held, its block is not reused: b cannot move up until it is let go of.
  ASSERT_TRUE((*store)->Delete(a.meta.context_key, scope).ok());
  EXPECT_EQ((*store)->GetOnDevice(b.meta.context_key, KeyKind::kContext, scope).status().code(),
            ErrorCode::kResourceExhausted);
  std::vector<std::byte> back(a.payload.size());
  ASSERT_TRUE(kernels::CopyDeviceToHost(back.data(), held->payload.data(), back.size()).ok());
  EXPECT_EQ(std::memcmp(back.data(), a.payload.data(), back.size()), 0);
  held = Error(ErrorCode::kNotFound, "let go");
  auto b_held = (*store)->GetOnDevice(b.meta.context_key, KeyKind::kContext, scope);
  ASSERT_TRUE(b_held.ok()) << b_held.status().ToString();
  ASSERT_TRUE(kernels::CopyDeviceToHost(back.data(), b_held->payload.data(), back.size()).ok());
  EXPECT_EQ(std::memcmp(back.data(), b.payload.data(), back.size()), 0);
}

TEST(GpuTier, PutFromDeviceCopiesWithinTheGpuAndGivesLowerTiersHostBytesOnlyWhenNeeded) {
  auto a = MakeSegment(64, 3), b = MakeSegment(64, 4);
  Scope scope{"test", std::nullopt};
  int host_copies = 0;
  auto host_copy_of = [&](const Blob& payload) {
    return [&host_copies, payload]() -> Result<Blob> {
      ++host_copies;
      return payload;
    };
  };
  StoreOptions options;
  options.persist = false;
  options.host_capacity_bytes = 1 << 20;
  if (!kernels::CudaAvailable()) {
    auto store = TieredStore::Open(options);
    ASSERT_TRUE(store.ok());
    auto refused = (*store)->PutFromDevice(a.meta, a.payload.data(), host_copy_of(a.payload));
    EXPECT_EQ(refused.status().code(), ErrorCode::kUnavailable);
    EXPECT_EQ(host_copies, 0);
    GTEST_SKIP() << "needs a CUDA GPU for the rest: " << kernels::CudaDeviceDescription();
  }
  auto device_a = kernels::DeviceBuffer::Allocate(a.payload.size());
  auto device_b = kernels::DeviceBuffer::Allocate(b.payload.size());
  ASSERT_TRUE(device_a.ok() && device_b.ok());
  ASSERT_TRUE(kernels::CopyHostToDevice(device_a->data(), a.payload.data(), a.payload.size()).ok());
  ASSERT_TRUE(kernels::CopyHostToDevice(device_b->data(), b.payload.data(), b.payload.size()).ok());
  options.gpu_capacity_bytes = a.payload.size() + 512;  // one segment
  auto store = TieredStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->PutFromDevice(a.meta, device_a->data(), host_copy_of(a.payload)).ok());
  EXPECT_EQ(host_copies, 0);  // placed on the GPU from device memory
  ASSERT_TRUE((*store)->PutFromDevice(b.meta, device_b->data(), host_copy_of(b.payload)).ok());
  EXPECT_EQ(host_copies, 0);  // a was demoted from the GPU tier's own bytes
  // What the GPU tier holds and what went down are copies of the payloads: overwriting the
  // sources changes nothing.
  const std::vector<std::byte> zeros(a.payload.size());
  ASSERT_TRUE(kernels::CopyHostToDevice(device_a->data(), zeros.data(), zeros.size()).ok());
  ASSERT_TRUE(kernels::CopyHostToDevice(device_b->data(), zeros.data(), zeros.size()).ok());
  for (const auto* s : {&a, &b}) {
    auto got = (*store)->Get(s->meta.context_key, KeyKind::kContext, scope);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_EQ(got->payload.size(), s->payload.size());
    EXPECT_EQ(std::memcmp(got->payload.data(), s->payload.data(), s->payload.size()), 0);
  }
  // Too large for the GPU tier: the host tier gets the host copy, made once.
  auto big = MakeSegment(256, 5);
  auto device_big = kernels::DeviceBuffer::Allocate(big.payload.size());
  ASSERT_TRUE(device_big.ok());
  ASSERT_TRUE(
      (*store)->PutFromDevice(big.meta, device_big->data(), host_copy_of(big.payload)).ok());
  EXPECT_EQ(host_copies, 1);
  auto where = (*store)->Lookup({{big.meta.context_key, KeyKind::kContext}}, scope);
  EXPECT_EQ(where[0].tier, TierKind::kHost);
}

}  // namespace
}  // namespace kvcomm::kvstore
