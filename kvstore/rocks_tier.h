// RocksTier: segments on disk in RocksDB, surviving restarts.
//
// Metadata and payloads live in separate column families (kMetaFamily, kPayloadFamily) keyed by
// the 16-byte context key; payloads use RocksDB's blob files, which suit large values. Every
// payload read is checked against the checksum in its metadata: a corrupt record is dropped,
// counted and reported as kDataLoss, never returned.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/lru_index.h"
#include "kvstore/tier.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace kvcomm::kvstore {

class RocksTier final : public StorageTier {
 public:
  static constexpr const char* kMetaFamily = "segment_meta";
  static constexpr const char* kPayloadFamily = "segment_payload";
  static constexpr const char* kRecordFamily = "records";

  struct Opened {
    std::unique_ptr<RocksTier> tier;
    std::vector<SegmentMeta> segments;  // every valid record found, for the store's index
    uint64_t dropped_records = 0;       // metadata records that failed to decode
  };
  // Opens (creating if needed) the database at `dir`. capacity_bytes 0 means unlimited.
  static Result<Opened> Open(const std::string& dir, uint64_t capacity_bytes);
  ~RocksTier() override;

  TierKind kind() const override { return TierKind::kDisk; }
  uint64_t capacity_bytes() const override { return capacity_; }
  uint64_t used_bytes() const override { return used_; }
  uint64_t segment_count() const override { return index_.size(); }
  bool Contains(const SegmentKey& key) const override { return index_.Contains(key); }
  bool CanFit(uint64_t bytes) const override { return FitsWithin(capacity_, used_, bytes); }
  Status Put(const SegmentMeta& meta, const Blob& payload) override;
  Result<Blob> Read(const SegmentKey& key) override;
  Status Erase(const SegmentKey& key) override;
  std::optional<SegmentKey> Coldest() const override { return index_.Coldest(); }

  // Rewrites a segment's metadata record (access counters change while it is stored).
  Status UpdateMeta(const SegmentMeta& meta);
  // Flushes memtables and syncs the WAL.
  Status Flush();

  // Small named records kept beside the segments (the daemon's anchor pool index), each stored
  // with a checksum. ReadRecords returns those whose name starts with `prefix`; a record that
  // fails its checksum is deleted and counted in `dropped`.
  Status PutRecord(std::string_view name, std::string_view value);
  Status DeleteRecord(std::string_view name);
  Result<std::vector<std::pair<std::string, std::string>>> ReadRecords(std::string_view prefix,
                                                                       uint64_t* dropped);

 private:
  struct Stored {
    uint64_t payload_bytes;
    uint64_t checksum;
  };
  RocksTier() = default;

  uint64_t capacity_ = 0;
  uint64_t used_ = 0;
  LruIndex<Stored> index_;
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::ColumnFamilyHandle* meta_cf_ = nullptr;     // owned by db_
  rocksdb::ColumnFamilyHandle* payload_cf_ = nullptr;  // owned by db_
  rocksdb::ColumnFamilyHandle* default_cf_ = nullptr;  // owned by db_
  rocksdb::ColumnFamilyHandle* record_cf_ = nullptr;   // owned by db_
};

}  // namespace kvcomm::kvstore
