#include "kvstore/host_tier.h"

#include <gtest/gtest.h>

#include "tests/kvstore/test_segments.h"

namespace kvcomm::kvstore {
namespace {

using kvcomm::testing::MakeSegment;

TEST(HostTier, KeepsLruOrderAndCountsBytes) {
  auto a = MakeSegment(4, 1), b = MakeSegment(4, 2), c = MakeSegment(4, 3);
  const uint64_t size = a.payload.size();
  HostTier tier(3 * size);
  ASSERT_TRUE(tier.Put(a.meta, a.payload).ok());
  ASSERT_TRUE(tier.Put(b.meta, b.payload).ok());
  ASSERT_TRUE(tier.Put(c.meta, c.payload).ok());
  EXPECT_EQ(tier.used_bytes(), 3 * size);
  EXPECT_FALSE(tier.CanFit(1));
  EXPECT_EQ(*tier.Coldest(), a.meta.context_key);
  ASSERT_TRUE(tier.Read(a.meta.context_key).ok());  // a becomes most recent
  EXPECT_EQ(*tier.Coldest(), b.meta.context_key);
  ASSERT_TRUE(tier.Erase(b.meta.context_key).ok());
  EXPECT_EQ(tier.used_bytes(), 2 * size);
  EXPECT_EQ(*tier.Coldest(), c.meta.context_key);
  EXPECT_EQ(tier.Read(b.meta.context_key).status().code(), ErrorCode::kNotFound);
}

TEST(HostTier, ReadReturnsTheSameBytesWithoutCopying) {
  auto a = MakeSegment(16, 9);
  HostTier tier(1 << 20);
  ASSERT_TRUE(tier.Put(a.meta, a.payload).ok());
  auto read = tier.Read(a.meta.context_key);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->data(), a.payload.data());
  EXPECT_EQ(read->size(), a.payload.size());
}

}  // namespace
}  // namespace kvcomm::kvstore
