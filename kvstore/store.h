// TieredStore: segments across GPU -> host -> disk tiers with placement, demotion, promotion
// and eviction (DESIGN.md, "Tiers").
//
// Placement rules:
//  - Put writes to the highest memory tier that can ever hold the segment and, with persistence
//    on, through to RocksDB. A tier that is full demotes its least recently used segments to the
//    next tier until the new one fits; a configured capacity is never exceeded.
//  - Get reads from the highest tier holding the segment and promotes it to the top tier.
//  - A segment dropped by the last tier that held it is an eviction, counted in stats.
//
// Thread safety: every public method may be called from any thread; one internal mutex
// serialises them. Payloads are immutable shared Blobs, so a reply holds its bytes after the
// lock is released without a copy.
//
// Inputs are trusted: the daemon validates requests (layout vs byte length, checksum,
// namespace) before calling Put.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "kvstore/gpu_tier.h"
#include "kvstore/rocks_tier.h"
#include "kvstore/segment.h"
#include "kvstore/tier.h"

namespace kvcomm::kvstore {

struct StoreOptions {
  uint64_t gpu_capacity_bytes = 0;            // 0: no GPU tier
  uint64_t host_capacity_bytes = 1ull << 30;  // must be > 0
  bool persist = true;                        // write through to RocksDB at data_dir
  std::string data_dir;
  uint64_t disk_capacity_bytes = 0;  // 0: unlimited

  Status Validate() const;
};

enum class KeyKind : uint8_t { kContext = 0, kContent = 1 };

// Who is asking: segments outside the namespace are invisible (NotFound); a set model
// fingerprint must match the segment's (kFingerprintMismatch).
struct Scope {
  std::string name_space;
  std::optional<ModelFingerprint> model;
};

struct LookupHit {
  bool found = false;
  TierKind tier = TierKind::kNone;
  SegmentKey context_key;
  uint32_t tokens = 0;
  uint64_t payload_bytes = 0;
};

struct TierStatsSnapshot {
  TierKind tier;
  uint64_t segments = 0;
  uint64_t bytes = 0;
  uint64_t capacity_bytes = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
};

struct StoreStats {
  std::vector<TierStatsSnapshot> tiers;  // highest first
  uint64_t puts = 0;
  uint64_t gets = 0;
  uint64_t promotions = 0;
  uint64_t demotions = 0;
  uint64_t evictions = 0;
  uint64_t corrupt_records = 0;
  uint64_t segments = 0;  // distinct segments held anywhere
};

// A segment's metadata and its payload in the GPU tier, usable in place by kernels for as long
// as `payload` is held.
struct DeviceSegment {
  SegmentMeta meta;
  DeviceBytes payload;
};

struct SegmentListing {
  SegmentMeta meta;
  TierKind tier;
};

class TieredStore {
 public:
  static Result<std::unique_ptr<TieredStore>> Open(const StoreOptions& options);
  ~TieredStore();
  TieredStore(const TieredStore&) = delete;
  TieredStore& operator=(const TieredStore&) = delete;

  // Stores the segment under meta.context_key, replacing a different payload stored there; the
  // same payload again is a no-op that keeps the stored copy and its access history. Returns the
  // stored metadata.
  Result<SegmentMeta> Put(SegmentMeta meta, Blob payload);
  // The same for a payload of meta.payload_bytes at `device` (device memory on the GPU tier's
  // device; meta.checksum already set): the GPU tier copies it within the GPU, and `host_copy`
  // is called (at most once) only if another tier needs the bytes (persistence, or no room on
  // the GPU). kUnavailable without a GPU tier.
  Result<SegmentMeta> PutFromDevice(SegmentMeta meta, const std::byte* device,
                                    const std::function<Result<Blob>()>& host_copy);
  Result<Segment> Get(const SegmentKey& key, KeyKind kind, const Scope& scope);
  // The same, promoted into the GPU tier (if it is not there yet) and not copied out of it.
  // kUnavailable without a GPU tier; kResourceExhausted if it cannot be placed there.
  Result<DeviceSegment> GetOnDevice(const SegmentKey& key, KeyKind kind, const Scope& scope);
  // Where each key is, without counting hits or promoting.
  std::vector<LookupHit> Lookup(const std::vector<std::pair<SegmentKey, KeyKind>>& keys,
                                const Scope& scope) const;
  Status Delete(const SegmentKey& context_key, const Scope& scope);
  // Segments of the scope's namespace in key order, after `start_after` if given.
  std::vector<SegmentListing> List(const Scope& scope, std::optional<SegmentKey> start_after,
                                   size_t limit, bool* has_more) const;
  StoreStats Stats() const;
  // Persists access counters and flushes RocksDB. Called on shutdown; safe to call any time.
  Status Flush();

  // Small named records persisted beside the segments, for bookkeeping that refers to them
  // (the daemon's anchor pools). Without a disk tier nothing persists: puts succeed and no
  // records are read back. `dropped` counts records that failed their checksum (deleted).
  Status PutRecord(std::string_view name, std::string_view value);
  Status DeleteRecord(std::string_view name);
  Result<std::vector<std::pair<std::string, std::string>>> Records(std::string_view prefix,
                                                                   uint64_t* dropped = nullptr);

  // The tiers present, highest first (for diagnostics and tests).
  std::vector<TierKind> TierKinds() const;

 private:
  struct TierCounters {
    uint64_t hits = 0;
    uint64_t misses = 0;
  };
  TieredStore() = default;

  // All private helpers expect mu_ held.
  int HighestTierHolding(const SegmentKey& key) const;
  // Resolves a read and counts it: hit in the tier `holding`, misses above it.
  const SegmentMeta* Find(const SegmentKey& key, KeyKind kind, const Scope& scope, Status* error,
                          int* holding);
  Result<Blob> ReadFrom(int tier, const SegmentKey& key);
  void FinishPromotion(int from, const SegmentKey& key);
  // Counts an access; nullptr if the entry is gone (evicted while tiers made room).
  const SegmentMeta* RecordAccess(const SegmentKey& key);
  const SegmentMeta* Resolve(const SegmentKey& key, KeyKind kind, const Scope& scope,
                             Status* error) const;
  // Put's work: with `device`, the GPU tier copies from there; host bytes come from host_copy.
  Result<SegmentMeta> Place(SegmentMeta meta, const std::byte* device,
                            const std::function<Result<Blob>()>& host_copy);
  bool MakeRoom(size_t tier, uint64_t bytes);
  void Demote(size_t tier, const SegmentKey& key);
  bool PlaceInMemoryTiers(const SegmentMeta& meta, const Blob& payload, size_t below);
  void RemoveEverywhere(const SegmentKey& key);
  void DropEntry(const SegmentKey& key);
  bool Fits(const StorageTier& tier, uint64_t bytes) const;

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<StorageTier>> tiers_;  // highest first; disk (if any) last
  RocksTier* disk_ = nullptr;                        // tiers_.back() when persisting
  std::vector<TierCounters> counters_;
  std::map<SegmentKey, SegmentMeta> entries_;  // ordered, for paging
  std::unordered_map<SegmentKey, std::vector<SegmentKey>, Hash128Hasher> by_content_;
  std::unordered_set<SegmentKey, Hash128Hasher> dirty_meta_;  // disk records with stale counters
  StoreStats totals_;
};

}  // namespace kvcomm::kvstore
