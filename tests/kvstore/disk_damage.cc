#include "tests/kvstore/disk_damage.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <memory>

#include "kvstore/rocks_tier.h"

namespace kvcomm::testing {

namespace {

// Flips one bit in the middle of the first value of column family `family` (an index into the
// store's families: default, meta, payload, records).
void FlipBitInFirst(const std::string& dir, size_t family) {
  rocksdb::ColumnFamilyOptions blob_options;
  blob_options.enable_blob_files = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, {}},
      {kvstore::RocksTier::kMetaFamily, {}},
      {kvstore::RocksTier::kPayloadFamily, blob_options},
      {kvstore::RocksTier::kRecordFamily, {}}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), dir, families, &handles, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[family]));
  it->SeekToFirst();
  ASSERT_TRUE(it->Valid());
  std::string key = it->key().ToString(), value = it->value().ToString();
  it.reset();
  value[value.size() / 2] ^= 0x10;
  ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[family], key, value).ok());
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
}

}  // namespace

void FlipBitInFirstPayload(const std::string& dir) { FlipBitInFirst(dir, 2); }

void FlipBitInFirstRecord(const std::string& dir) { FlipBitInFirst(dir, 3); }

}  // namespace kvcomm::testing
