// HostTier: payloads in host memory with a byte capacity and LRU order. Payloads are shared
// Blobs, so a put from a received frame and a read for a reply copy nothing.
#pragma once

#include "common/lru_index.h"
#include "kvstore/tier.h"

namespace kvcomm::kvstore {

class HostTier final : public StorageTier {
 public:
  explicit HostTier(uint64_t capacity_bytes) : capacity_(capacity_bytes) {}

  TierKind kind() const override { return TierKind::kHost; }
  uint64_t capacity_bytes() const override { return capacity_; }
  uint64_t used_bytes() const override { return used_; }
  uint64_t segment_count() const override { return index_.size(); }
  bool Contains(const SegmentKey& key) const override { return index_.Contains(key); }
  bool CanFit(uint64_t bytes) const override { return FitsWithin(capacity_, used_, bytes); }
  Status Put(const SegmentMeta& meta, const Blob& payload) override;
  Result<Blob> Read(const SegmentKey& key) override;
  Status Erase(const SegmentKey& key) override;
  std::optional<SegmentKey> Coldest() const override { return index_.Coldest(); }

 private:
  uint64_t capacity_;
  uint64_t used_ = 0;
  LruIndex<Blob> index_;
};

}  // namespace kvcomm::kvstore
