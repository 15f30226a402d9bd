#include "tests/kvstore/disk_damage.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <memory>

#include "kvstore/rocks_tier.h"

namespace kvcomm::testing {

void FlipBitInFirstPayload(const std::string& dir) {
  rocksdb::ColumnFamilyOptions blob_options;
  blob_options.enable_blob_files = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, {}},
      {kvstore::RocksTier::kMetaFamily, {}},
      {kvstore::RocksTier::kPayloadFamily, blob_options}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), dir, families, &handles, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[2]));
  it->SeekToFirst();
  ASSERT_TRUE(it->Valid());
  std::string key = it->key().ToString(), value = it->value().ToString();
  it.reset();
  value[value.size() / 2] ^= 0x10;
  ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[2], key, value).ok());
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
}

}  // namespace kvcomm::testing
