#include "kvstore/rocks_tier.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/write_batch.h>

#include <algorithm>

#include "kvstore/internal/meta_codec.h"

namespace kvcomm::kvstore {
namespace {

std::string KeyBytes(const SegmentKey& key) {
  std::string out(16, '\0');
  for (int i = 0; i < 8; ++i) {  // big-endian, so iteration order matches key order
    out[i] = static_cast<char>(key.hi >> (56 - 8 * i));
    out[8 + i] = static_cast<char>(key.lo >> (56 - 8 * i));
  }
  return out;
}

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  return Error(ErrorCode::kInternal, "RocksDB {}: {}", what, s.ToString());
}

}  // namespace

Result<RocksTier::Opened> RocksTier::Open(const std::string& dir, uint64_t capacity_bytes) {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;

  rocksdb::ColumnFamilyOptions meta_options;
  rocksdb::ColumnFamilyOptions payload_options;
  payload_options.enable_blob_files = true;  // large values go to blob files, not the LSM tree
  payload_options.min_blob_size = 4096;

  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {kMetaFamily, meta_options},
      {kPayloadFamily, payload_options},
      {kRecordFamily, rocksdb::ColumnFamilyOptions()}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir, families, &handles, &raw);
  if (!s.ok()) {
    return Error(ErrorCode::kInternal, "cannot open RocksDB at '{}': {}", dir, s.ToString());
  }
  std::unique_ptr<RocksTier> tier(new RocksTier());
  tier->db_.reset(raw);
  tier->default_cf_ = handles[0];
  tier->meta_cf_ = handles[1];
  tier->payload_cf_ = handles[2];
  tier->record_cf_ = handles[3];
  tier->capacity_ = capacity_bytes;

  Opened opened;
  std::unique_ptr<rocksdb::Iterator> it(
      tier->db_->NewIterator(rocksdb::ReadOptions(), tier->meta_cf_));
  std::vector<std::string> bad_keys;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    auto meta = internal::DecodeMeta(std::string_view(it->value().data(), it->value().size()));
    if (!meta.ok() || KeyBytes(meta->context_key) != it->key().ToString()) {
      bad_keys.push_back(it->key().ToString());
      continue;
    }
    opened.segments.push_back(std::move(meta).value());
  }
  KVCOMM_RETURN_IF_ERROR(FromRocks(it->status(), "scan of segment metadata"));
  it.reset();
  for (const auto& key : bad_keys) {
    rocksdb::WriteBatch batch;
    batch.Delete(tier->meta_cf_, key);
    batch.Delete(tier->payload_cf_, key);
    KVCOMM_RETURN_IF_ERROR(
        FromRocks(tier->db_->Write(rocksdb::WriteOptions(), &batch), "drop bad record"));
  }
  opened.dropped_records = bad_keys.size();

  // Rebuild the LRU order: oldest access first, so the newest ends up most recent.
  std::sort(opened.segments.begin(), opened.segments.end(), [](const auto& a, const auto& b) {
    return a.last_access_unix_ms < b.last_access_unix_ms;
  });
  for (const auto& m : opened.segments) {
    tier->index_.Insert(m.context_key, Stored{m.payload_bytes, m.checksum});
    tier->used_ += m.payload_bytes;
  }
  opened.tier = std::move(tier);
  return opened;
}

RocksTier::~RocksTier() {
  if (!db_) return;
  (void)Flush();
  for (auto* h : {meta_cf_, payload_cf_, record_cf_, default_cf_})
    db_->DestroyColumnFamilyHandle(h);
  (void)db_->Close();
}

Status RocksTier::Put(const SegmentMeta& meta, const Blob& payload) {
  assert(!index_.Contains(meta.context_key) && CanFit(payload.size()));
  std::string key = KeyBytes(meta.context_key);
  rocksdb::WriteBatch batch;
  batch.Put(meta_cf_, key, internal::EncodeMeta(meta));
  batch.Put(payload_cf_, key,
            rocksdb::Slice(reinterpret_cast<const char*>(payload.data()), payload.size()));
  KVCOMM_RETURN_IF_ERROR(FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "write segment"));
  index_.Insert(meta.context_key, Stored{payload.size(), meta.checksum});
  used_ += payload.size();
  return Status::Ok();
}

Result<Blob> RocksTier::Read(const SegmentKey& key) {
  Stored* stored = index_.Touch(key);
  if (stored == nullptr)
    return Error(ErrorCode::kNotFound, "disk tier has no segment {}", key.ToHex());
  auto value = std::make_shared<rocksdb::PinnableSlice>();
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), payload_cf_, KeyBytes(key), value.get());
  Status problem;
  if (s.IsNotFound()) {
    problem =
        Error(ErrorCode::kDataLoss, "segment {} has metadata but no payload on disk", key.ToHex());
  } else if (!s.ok()) {
    problem =
        Error(ErrorCode::kDataLoss, "segment {} payload unreadable: {}", key.ToHex(), s.ToString());
  } else {
    std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(value->data()),
                                     value->size());
    if (bytes.size() != stored->payload_bytes) {
      problem = Error(ErrorCode::kDataLoss, "segment {} payload has {} bytes on disk, expected {}",
                      key.ToHex(), bytes.size(), stored->payload_bytes);
    } else if (Checksum64(bytes) != stored->checksum) {
      problem = Error(ErrorCode::kDataLoss, "segment {} payload failed its checksum on disk",
                      key.ToHex());
    } else {
      return Blob(bytes.data(), bytes.size(), std::shared_ptr<const void>(value, value.get()));
    }
  }
  (void)Erase(key);  // a corrupt record is never served again
  return problem;
}

Status RocksTier::Erase(const SegmentKey& key) {
  auto stored = index_.Remove(key);
  std::string k = KeyBytes(key);
  rocksdb::WriteBatch batch;
  batch.Delete(meta_cf_, k);
  batch.Delete(payload_cf_, k);
  KVCOMM_RETURN_IF_ERROR(FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "delete segment"));
  if (stored) used_ -= stored->payload_bytes;
  return Status::Ok();
}

Status RocksTier::UpdateMeta(const SegmentMeta& meta) {
  if (!index_.Contains(meta.context_key)) return Status::Ok();
  return FromRocks(db_->Put(rocksdb::WriteOptions(), meta_cf_, KeyBytes(meta.context_key),
                            internal::EncodeMeta(meta)),
                   "update segment metadata");
}

Status RocksTier::Flush() {
  KVCOMM_RETURN_IF_ERROR(
      FromRocks(db_->Flush(rocksdb::FlushOptions(), {meta_cf_, payload_cf_, record_cf_}), "flush"));
  return FromRocks(db_->SyncWAL(), "sync WAL");
}

Status RocksTier::PutRecord(std::string_view name, std::string_view value) {
  const uint64_t checksum = Checksum64(std::as_bytes(std::span(value.data(), value.size())));
  std::string stored(sizeof checksum, '\0');
  for (size_t i = 0; i < sizeof checksum; ++i) stored[i] = static_cast<char>(checksum >> (8 * i));
  stored.append(value);
  return FromRocks(db_->Put(rocksdb::WriteOptions(), record_cf_, name, stored), "write record");
}

Status RocksTier::DeleteRecord(std::string_view name) {
  return FromRocks(db_->Delete(rocksdb::WriteOptions(), record_cf_, name), "delete record");
}

Result<std::vector<std::pair<std::string, std::string>>> RocksTier::ReadRecords(
    std::string_view prefix, uint64_t* dropped) {
  std::vector<std::pair<std::string, std::string>> records;
  std::vector<std::string> bad;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), record_cf_));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    std::string_view stored(it->value().data(), it->value().size());
    uint64_t checksum = 0;
    if (stored.size() >= sizeof checksum) {
      for (size_t i = 0; i < sizeof checksum; ++i)
        checksum |= uint64_t{static_cast<uint8_t>(stored[i])} << (8 * i);
      std::string_view value = stored.substr(sizeof checksum);
      if (Checksum64(std::as_bytes(std::span(value.data(), value.size()))) == checksum) {
        records.emplace_back(it->key().ToString(), std::string(value));
        continue;
      }
    }
    bad.push_back(it->key().ToString());
  }
  KVCOMM_RETURN_IF_ERROR(FromRocks(it->status(), "scan of records"));
  for (const auto& name : bad) KVCOMM_RETURN_IF_ERROR(DeleteRecord(name));
  if (dropped) *dropped += bad.size();
  return records;
}

}  // namespace kvcomm::kvstore
