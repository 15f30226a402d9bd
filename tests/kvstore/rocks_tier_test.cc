#include "kvstore/rocks_tier.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <cstring>
#include <filesystem>

#include "tests/kvstore/test_segments.h"

namespace kvcomm::kvstore {
namespace {

using kvcomm::testing::MakeSegment;
using kvcomm::testing::TempDir;

// Overwrites one byte of a stored payload through RocksDB itself, as disk damage would.
void CorruptPayloadOnDisk(const std::string& dir, const SegmentKey& key) {
  std::string k(16, '\0');
  for (int i = 0; i < 8; ++i) {
    k[i] = static_cast<char>(key.hi >> (56 - 8 * i));
    k[8 + i] = static_cast<char>(key.lo >> (56 - 8 * i));
  }
  rocksdb::ColumnFamilyOptions blob_options;
  blob_options.enable_blob_files = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, {}},
      {RocksTier::kMetaFamily, {}},
      {RocksTier::kPayloadFamily, blob_options}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), dir, families, &handles, &db).ok());
  std::string value;
  ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), handles[2], k, &value).ok());
  value[value.size() / 2] ^= 0x01;
  ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[2], k, value).ok());
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  delete db;
}

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
  CorruptPayloadOnDisk(dir, a.meta.context_key);
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
