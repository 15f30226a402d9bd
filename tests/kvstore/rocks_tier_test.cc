#include "kvstore/rocks_tier.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "tests/kvstore/disk_damage.h"
#include "tests/kvstore/test_segments.h"

namespace kvcomm::kvstore {
namespace {

using kvcomm::testing::FlipBitInFirstPayload;
using kvcomm::testing::MakeSegment;
using kvcomm::testing::TempDir;

TEST(RocksTier, SegmentsSurviveReopenWithTheirMetadata) {
  const std::string dir = TempDir("rocks");
  auto a = MakeSegment(32, 1), b = MakeSegment(8, 2);
  {
    auto opened = RocksTier::Open(dir, 0);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    ASSERT_TRUE(opened->tier->Put(a.meta, a.payload).ok());
    ASSERT_TRUE(opened->tier->Put(b.meta, b.payload).ok());
  }
  auto reopened = RocksTier::Open(dir, 0);
  ASSERT_TRUE(reopened.ok());
  ASSERT_EQ(reopened->segments.size(), 2u);
  EXPECT_EQ(reopened->tier->used_bytes(), a.payload.size() + b.payload.size());
  auto read = reopened->tier->Read(a.meta.context_key);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  ASSERT_EQ(read->size(), a.payload.size());
  EXPECT_EQ(std::memcmp(read->data(), a.payload.data(), a.payload.size()), 0);
  std::filesystem::remove_all(dir);
}

TEST(RocksTier, CorruptPayloadIsReportedAndDroppedNeverReturned) {
  const std::string dir = TempDir("rocks-corrupt");
  auto a = MakeSegment(64, 3);
  {
    auto opened = RocksTier::Open(dir, 0);
    ASSERT_TRUE(opened.ok());
    ASSERT_TRUE(opened->tier->Put(a.meta, a.payload).ok());
  }
  FlipBitInFirstPayload(dir);
  auto reopened = RocksTier::Open(dir, 0);
  ASSERT_TRUE(reopened.ok());
  auto read = reopened->tier->Read(a.meta.context_key);
  EXPECT_EQ(read.status().code(), ErrorCode::kDataLoss);
  EXPECT_NE(read.status().message().find("checksum"), std::string::npos);
  EXPECT_FALSE(reopened->tier->Contains(a.meta.context_key));
  EXPECT_EQ(reopened->tier->used_bytes(), 0u);
  reopened->tier.reset();
  auto again = RocksTier::Open(dir, 0);  // the record is gone from disk too
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->segments.empty());
  std::filesystem::remove_all(dir);
}

TEST(RocksTier, RespectsCapacity) {
  const std::string dir = TempDir("rocks-cap");
  auto a = MakeSegment(16, 4);
  auto opened = RocksTier::Open(dir, a.payload.size() + 10);
  ASSERT_TRUE(opened.ok());
  EXPECT_TRUE(opened->tier->CanFit(a.payload.size()));
  ASSERT_TRUE(opened->tier->Put(a.meta, a.payload).ok());
  EXPECT_FALSE(opened->tier->CanFit(a.payload.size()));
  opened->tier.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvcomm::kvstore
