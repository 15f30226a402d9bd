// StorageTier: one level of the tiered store (GPU arena, host memory, RocksDB).
//
// A tier stores payload bytes by context key and keeps its own LRU order; it knows nothing of
// placement. TieredStore (placement.h) decides what goes where and calls these methods under
// its own lock, so tiers need not be thread-safe themselves.
#pragma once

#include <cstdint>
#include <optional>

#include "common/blob.h"
#include "kvstore/segment.h"

namespace kvcomm::kvstore {

// Whether `bytes` more fit under `capacity` (0: unlimited) with `used` taken.
inline bool FitsWithin(uint64_t capacity, uint64_t used, uint64_t bytes) {
  return capacity == 0 || (bytes <= capacity && used <= capacity - bytes);
}

class StorageTier {
 public:
  virtual ~StorageTier() = default;

  virtual TierKind kind() const = 0;
  // Byte capacity; 0 means unlimited.
  virtual uint64_t capacity_bytes() const = 0;
  virtual uint64_t used_bytes() const = 0;
  virtual uint64_t segment_count() const = 0;

  virtual bool Contains(const SegmentKey& key) const = 0;
  // Whether `bytes` more would fit now (capacity and, for arenas, a free block).
  virtual bool CanFit(uint64_t bytes) const = 0;
  // Stores the payload as the most recently used entry. Caller ensures CanFit() and that the key
  // is not present.
  virtual Status Put(const SegmentMeta& meta, const Blob& payload) = 0;
  // Returns the payload and marks the entry most recently used. A tier that detects corruption
  // returns kDataLoss and has already dropped the record.
  virtual Result<Blob> Read(const SegmentKey& key) = 0;
  virtual Status Erase(const SegmentKey& key) = 0;
  // Least recently used key, if any.
  virtual std::optional<SegmentKey> Coldest() const = 0;
};

}  // namespace kvcomm::kvstore
