#include "kvstore/store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "kvstore/gpu_tier.h"
#include "kvstore/host_tier.h"

namespace kvcomm::kvstore {

Status StoreOptions::Validate() const {
  if (host_capacity_bytes == 0) return InvalidArgument("host capacity must be greater than 0");
  if (persist && data_dir.empty()) {
    return InvalidArgument("persistence is on but no data directory is set");
  }
  return Status::Ok();
}

Result<std::unique_ptr<TieredStore>> TieredStore::Open(const StoreOptions& options) {
  KVCOMM_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<TieredStore> store(new TieredStore());
  if (options.gpu_capacity_bytes > 0) {
    auto gpu = GpuTier::Create(options.gpu_capacity_bytes);
    if (!gpu.ok())
      return gpu.status().WithContext("gpu capacity is set but the GPU tier cannot start");
    store->tiers_.push_back(std::move(gpu).value());
  }
  store->tiers_.push_back(std::make_unique<HostTier>(options.host_capacity_bytes));
  if (options.persist) {
    std::error_code ec;
    std::filesystem::create_directories(options.data_dir, ec);
    if (ec) {
      return Error(ErrorCode::kInternal, "cannot create data directory '{}': {}", options.data_dir,
                   ec.message());
    }
    KVCOMM_ASSIGN_OR_RETURN(auto opened,
                            RocksTier::Open(options.data_dir, options.disk_capacity_bytes));
    store->disk_ = opened.tier.get();
    store->tiers_.push_back(std::move(opened.tier));
    store->totals_.corrupt_records += opened.dropped_records;
    for (auto& meta : opened.segments) {
      store->by_content_[meta.content_key].push_back(meta.context_key);
      SegmentKey key = meta.context_key;
      store->entries_.emplace(key, std::move(meta));
    }
    if (opened.dropped_records > 0) {
      spdlog::warn("dropped {} unreadable segment metadata records in {}", opened.dropped_records,
                   options.data_dir);
    }
  }
  store->counters_.resize(store->tiers_.size());
  return store;
}

TieredStore::~TieredStore() {
  Status s = Flush();
  if (!s.ok()) spdlog::error("flush at close failed: {}", s.ToString());
}

bool TieredStore::Fits(const StorageTier& tier, uint64_t bytes) const {
  return tier.capacity_bytes() == 0 || bytes <= tier.capacity_bytes();
}

int TieredStore::HighestTierHolding(const SegmentKey& key) const {
  for (size_t i = 0; i < tiers_.size(); ++i) {
    if (tiers_[i]->Contains(key)) return static_cast<int>(i);
  }
  return -1;
}

bool TieredStore::MakeRoom(size_t tier, uint64_t bytes) {
  if (!Fits(*tiers_[tier], bytes)) return false;
  while (!tiers_[tier]->CanFit(bytes)) {
    auto coldest = tiers_[tier]->Coldest();
    if (!coldest)
      return false;  // empty but still no room: fragmentation-free arenas never get here
    Demote(tier, *coldest);
  }
  return true;
}

void TieredStore::Demote(size_t tier, const SegmentKey& key) {
  bool kept_below = false;
  std::optional<Blob> payload;
  for (size_t below = tier + 1; below < tiers_.size() && !kept_below; ++below) {
    if (tiers_[below]->Contains(key)) {  // already there (write-through to disk)
      kept_below = true;
      break;
    }
    auto it = entries_.find(key);
    if (it == entries_.end() || !Fits(*tiers_[below], it->second.payload_bytes)) continue;
    if (!payload) {
      auto read = tiers_[tier]->Read(key);
      if (!read.ok()) {
        spdlog::error("demotion of {} could not read it: {}", key.ToHex(),
                      read.status().ToString());
        break;
      }
      payload = std::move(read).value();
    }
    if (!MakeRoom(below, payload->size())) continue;
    Status put = tiers_[below]->Put(it->second, *payload);
    if (put.ok()) {
      kept_below = true;
    } else {
      spdlog::error("demotion of {} to {} failed: {}", key.ToHex(), TierName(tiers_[below]->kind()),
                    put.ToString());
    }
  }
  Status erased = tiers_[tier]->Erase(key);
  if (!erased.ok()) spdlog::error("erase of {} failed: {}", key.ToHex(), erased.ToString());
  if (kept_below) {
    ++totals_.demotions;
    spdlog::debug("demoted {} from the {} tier", key.ToHex(), TierName(tiers_[tier]->kind()));
  } else if (HighestTierHolding(key) < 0) {
    ++totals_.evictions;
    DropEntry(key);
  }
}

void TieredStore::DropEntry(const SegmentKey& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  auto content = by_content_.find(it->second.content_key);
  if (content != by_content_.end()) {
    auto& keys = content->second;
    keys.erase(std::remove(keys.begin(), keys.end(), key), keys.end());
    if (keys.empty()) by_content_.erase(content);
  }
  dirty_meta_.erase(key);
  entries_.erase(it);
}

void TieredStore::RemoveEverywhere(const SegmentKey& key) {
  for (auto& tier : tiers_) {
    if (!tier->Contains(key)) continue;
    Status s = tier->Erase(key);
    if (!s.ok())
      spdlog::error("erase of {} from {} failed: {}", key.ToHex(), TierName(tier->kind()),
                    s.ToString());
  }
  DropEntry(key);
}

bool TieredStore::PlaceInMemoryTiers(const SegmentMeta& meta, const Blob& payload, size_t below) {
  for (size_t i = 0; i < below; ++i) {
    if (tiers_[i].get() == disk_ || tiers_[i]->Contains(meta.context_key)) continue;
    if (!MakeRoom(i, payload.size())) continue;
    if (tiers_[i]->Put(meta, payload).ok()) return true;
  }
  return false;
}

Result<SegmentMeta> TieredStore::Put(SegmentMeta meta, Blob payload) {
  assert(meta.payload_bytes == payload.size());
  return Place(std::move(meta), nullptr, [&]() -> Result<Blob> { return payload; });
}

Result<SegmentMeta> TieredStore::PutFromDevice(SegmentMeta meta, const std::byte* device,
                                               const std::function<Result<Blob>()>& host_copy) {
  assert(device != nullptr);
  return Place(std::move(meta), device, host_copy);
}

Result<SegmentMeta> TieredStore::Place(SegmentMeta meta, const std::byte* device,
                                       const std::function<Result<Blob>()>& host_copy) {
  std::lock_guard lock(mu_);
  if (device != nullptr && tiers_.front()->kind() != TierKind::kGpu)
    return Error(ErrorCode::kUnavailable, "a put from device memory needs a GPU tier");
  const SegmentKey key = meta.context_key;
  const uint64_t bytes = meta.payload_bytes;
  bool any_fits = false;
  for (const auto& tier : tiers_) any_fits = any_fits || Fits(*tier, bytes);
  if (!any_fits) {
    return Error(ErrorCode::kResourceExhausted,
                 "segment of {} bytes is larger than every tier's capacity", bytes);
  }
  if (disk_ != nullptr && !Fits(*disk_, bytes)) {
    return Error(ErrorCode::kResourceExhausted,
                 "segment of {} bytes is larger than the disk capacity {}", bytes,
                 disk_->capacity_bytes());
  }
  if (auto existing = entries_.find(key); existing != entries_.end()) {
    if (existing->second.checksum == meta.checksum && existing->second.payload_bytes == bytes) {
      ++totals_.puts;  // the same bytes again: keep the stored copy and its history
      return existing->second;
    }
    RemoveEverywhere(key);
  }
  std::optional<Blob> host;  // made once, when a tier needs host bytes
  auto host_bytes = [&]() -> Result<Blob> {
    if (!host) {
      KVCOMM_ASSIGN_OR_RETURN(host, host_copy());
    }
    return *host;
  };

  meta.created_unix_ms = meta.last_access_unix_ms = NowUnixMs();
  meta.access_count = 0;
  entries_[key] = meta;
  by_content_[meta.content_key].push_back(key);
  if (disk_ != nullptr) {
    auto payload = host_bytes();
    Status written = !payload.ok() ? payload.status()
                     : MakeRoom(tiers_.size() - 1, bytes)
                         ? disk_->Put(meta, *payload)
                         : Error(ErrorCode::kResourceExhausted, "disk tier cannot make room");
    if (!written.ok()) {
      DropEntry(key);
      return written;
    }
  }
  bool in_memory = device != nullptr && MakeRoom(0, bytes) &&
                   static_cast<GpuTier&>(*tiers_.front()).PutFromDevice(meta, device, bytes).ok();
  if (!in_memory) {
    auto payload = host_bytes();
    if (!payload.ok()) {
      RemoveEverywhere(key);
      return payload.status();
    }
    in_memory = PlaceInMemoryTiers(meta, *payload, tiers_.size());
  }
  if (HighestTierHolding(key) < 0) {
    DropEntry(key);
    return Error(ErrorCode::kResourceExhausted, "no tier could make room for a segment of {} bytes",
                 bytes);
  }
  if (!in_memory) spdlog::debug("segment {} ({} bytes) stored on disk only", key.ToHex(), bytes);
  if (!entries_.count(key)) {  // evicted from disk while memory tiers made room: re-index
    entries_[key] = meta;
    by_content_[meta.content_key].push_back(key);
  }
  ++totals_.puts;
  return meta;
}

const SegmentMeta* TieredStore::Resolve(const SegmentKey& key, KeyKind kind, const Scope& scope,
                                        Status* error) const {
  const SegmentMeta* found = nullptr;
  if (kind == KeyKind::kContext) {
    auto it = entries_.find(key);
    if (it != entries_.end() && it->second.name_space == scope.name_space) found = &it->second;
  } else if (auto it = by_content_.find(key); it != by_content_.end()) {
    // Several contexts may hold the same text: prefer the highest tier, then the most recent.
    int best_tier = INT32_MAX;
    for (const auto& context_key : it->second) {
      const SegmentMeta& meta = entries_.at(context_key);
      if (meta.name_space != scope.name_space) continue;
      if (scope.model && meta.fingerprint != *scope.model) continue;
      int tier = HighestTierHolding(context_key);
      if (found == nullptr || tier < best_tier ||
          (tier == best_tier && meta.last_access_unix_ms > found->last_access_unix_ms)) {
        found = &meta;
        best_tier = tier;
      }
    }
  }
  if (found == nullptr) {
    *error =
        Error(ErrorCode::kNotFound, "no segment with {} key {} in namespace '{}'",
              kind == KeyKind::kContext ? "context" : "content", key.ToHex(), scope.name_space);
  } else if (scope.model && found->fingerprint != *scope.model) {
    *error = Error(ErrorCode::kFingerprintMismatch,
                   "segment {} belongs to model {}, the session's model is {}", key.ToHex(),
                   found->fingerprint.ToHex(), scope.model->ToHex());
    found = nullptr;
  }
  return found;
}

const SegmentMeta* TieredStore::Find(const SegmentKey& key, KeyKind kind, const Scope& scope,
                                     Status* error, int* holding) {
  ++totals_.gets;
  const SegmentMeta* meta = Resolve(key, kind, scope, error);
  if (meta == nullptr) {
    for (auto& c : counters_) ++c.misses;
    return nullptr;
  }
  *holding = HighestTierHolding(meta->context_key);
  assert(*holding >= 0);
  for (int i = 0; i < *holding; ++i) ++counters_[i].misses;
  ++counters_[*holding].hits;
  return meta;
}

Result<Blob> TieredStore::ReadFrom(int tier, const SegmentKey& key) {
  auto payload = tiers_[tier]->Read(key);
  if (!payload.ok()) {
    if (payload.status().code() == ErrorCode::kDataLoss) {
      ++totals_.corrupt_records;
      spdlog::error("corrupt segment dropped: {}", payload.status().message());
    }
    if (HighestTierHolding(key) < 0) DropEntry(key);
  }
  return payload;
}

void TieredStore::FinishPromotion(int from, const SegmentKey& key) {
  ++totals_.promotions;
  // A promotion moves the segment between memory tiers; the disk copy stays (write-through).
  StorageTier& tier = *tiers_[from];
  if (&tier != disk_ && tier.Contains(key)) {
    Status erased = tier.Erase(key);
    if (!erased.ok()) spdlog::error("erase after promotion failed: {}", erased.ToString());
  }
}

const SegmentMeta* TieredStore::RecordAccess(const SegmentKey& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return nullptr;  // evicted while tiers made room (tiny tiers)
  it->second.access_count++;
  it->second.last_access_unix_ms = NowUnixMs();
  if (disk_ != nullptr && disk_->Contains(key)) dirty_meta_.insert(key);
  return &it->second;
}

Result<Segment> TieredStore::Get(const SegmentKey& key, KeyKind kind, const Scope& scope) {
  std::lock_guard lock(mu_);
  Status error;
  int holding = -1;
  const SegmentMeta* meta = Find(key, kind, scope, &error, &holding);
  if (meta == nullptr) return error;
  const SegmentMeta found = *meta;  // entries_ may change while tiers make room
  KVCOMM_ASSIGN_OR_RETURN(Blob payload, ReadFrom(holding, found.context_key));
  if (holding > 0 && PlaceInMemoryTiers(found, payload, static_cast<size_t>(holding)))
    FinishPromotion(holding, found.context_key);
  const SegmentMeta* accessed = RecordAccess(found.context_key);
  return Segment{accessed ? *accessed : found, std::move(payload)};
}

Result<DeviceSegment> TieredStore::GetOnDevice(const SegmentKey& key, KeyKind kind,
                                               const Scope& scope) {
  std::lock_guard lock(mu_);
  if (tiers_.front()->kind() != TierKind::kGpu)
    return Error(ErrorCode::kUnavailable, "the store has no GPU tier (its GPU capacity is 0)");
  auto& gpu = static_cast<GpuTier&>(*tiers_.front());
  Status error;
  int holding = -1;
  const SegmentMeta* meta = Find(key, kind, scope, &error, &holding);
  if (meta == nullptr) return error;
  const SegmentMeta found = *meta;
  if (holding > 0) {
    KVCOMM_ASSIGN_OR_RETURN(Blob payload, ReadFrom(holding, found.context_key));
    if (!MakeRoom(0, payload.size()) || !gpu.Put(found, payload).ok()) {
      return Error(ErrorCode::kResourceExhausted,
                   "segment {} ({} bytes) does not fit in the GPU tier ({} of {} bytes used)",
                   found.context_key.ToHex(), payload.size(), gpu.used_bytes(),
                   gpu.capacity_bytes());
    }
    FinishPromotion(holding, found.context_key);
  }
  DeviceBytes bytes = gpu.Share(found.context_key);
  assert(bytes);
  const SegmentMeta* accessed = RecordAccess(found.context_key);
  return DeviceSegment{accessed ? *accessed : found, std::move(bytes)};
}

std::vector<LookupHit> TieredStore::Lookup(const std::vector<std::pair<SegmentKey, KeyKind>>& keys,
                                           const Scope& scope) const {
  std::lock_guard lock(mu_);
  std::vector<LookupHit> hits;
  hits.reserve(keys.size());
  for (const auto& [key, kind] : keys) {
    Status ignored;
    const SegmentMeta* meta = Resolve(key, kind, scope, &ignored);
    LookupHit hit;
    if (meta != nullptr) {
      hit.found = true;
      hit.tier = tiers_[HighestTierHolding(meta->context_key)]->kind();
      hit.context_key = meta->context_key;
      hit.tokens = meta->layout.tokens;
      hit.payload_bytes = meta->payload_bytes;
    }
    hits.push_back(hit);
  }
  return hits;
}

Status TieredStore::Delete(const SegmentKey& context_key, const Scope& scope) {
  std::lock_guard lock(mu_);
  Status error;
  if (Resolve(context_key, KeyKind::kContext, scope, &error) == nullptr) return error;
  RemoveEverywhere(context_key);
  return Status::Ok();
}

std::vector<SegmentListing> TieredStore::List(const Scope& scope,
                                              std::optional<SegmentKey> start_after, size_t limit,
                                              bool* has_more) const {
  std::lock_guard lock(mu_);
  std::vector<SegmentListing> page;
  *has_more = false;
  auto it = start_after ? entries_.upper_bound(*start_after) : entries_.begin();
  for (; it != entries_.end(); ++it) {
    if (it->second.name_space != scope.name_space) continue;
    if (page.size() == limit) {
      *has_more = true;
      break;
    }
    page.push_back({it->second, tiers_[HighestTierHolding(it->first)]->kind()});
  }
  return page;
}

StoreStats TieredStore::Stats() const {
  std::lock_guard lock(mu_);
  StoreStats stats = totals_;
  for (size_t i = 0; i < tiers_.size(); ++i) {
    stats.tiers.push_back({tiers_[i]->kind(), tiers_[i]->segment_count(), tiers_[i]->used_bytes(),
                           tiers_[i]->capacity_bytes(), counters_[i].hits, counters_[i].misses});
  }
  stats.segments = entries_.size();
  return stats;
}

Status TieredStore::Flush() {
  std::lock_guard lock(mu_);
  if (disk_ == nullptr) return Status::Ok();
  for (const auto& key : dirty_meta_) {
    auto it = entries_.find(key);
    if (it != entries_.end()) KVCOMM_RETURN_IF_ERROR(disk_->UpdateMeta(it->second));
  }
  dirty_meta_.clear();
  return disk_->Flush();
}

Status TieredStore::PutRecord(std::string_view name, std::string_view value) {
  std::lock_guard lock(mu_);
  return disk_ ? disk_->PutRecord(name, value) : Status::Ok();
}

Status TieredStore::DeleteRecord(std::string_view name) {
  std::lock_guard lock(mu_);
  return disk_ ? disk_->DeleteRecord(name) : Status::Ok();
}

Result<std::vector<std::pair<std::string, std::string>>> TieredStore::Records(
    std::string_view prefix, uint64_t* dropped) {
  std::lock_guard lock(mu_);
  if (!disk_) return std::vector<std::pair<std::string, std::string>>();
  return disk_->ReadRecords(prefix, dropped);
}

std::vector<TierKind> TieredStore::TierKinds() const {
  std::lock_guard lock(mu_);
  std::vector<TierKind> kinds;
  for (const auto& t : tiers_) kinds.push_back(t->kind());
  return kinds;
}

}  // namespace kvcomm::kvstore
