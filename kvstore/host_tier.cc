#include "kvstore/host_tier.h"

namespace kvcomm::kvstore {

Status HostTier::Put(const SegmentMeta& meta, const Blob& payload) {
  assert(!index_.Contains(meta.context_key) && CanFit(payload.size()));
  index_.Insert(meta.context_key, payload);
  used_ += payload.size();
  return Status::Ok();
}

Result<Blob> HostTier::Read(const SegmentKey& key) {
  Blob* blob = index_.Touch(key);
  if (blob == nullptr)
    return Error(ErrorCode::kNotFound, "host tier has no segment {}", key.ToHex());
  return *blob;
}

Status HostTier::Erase(const SegmentKey& key) {
  auto blob = index_.Remove(key);
  if (blob) used_ -= blob->size();
  return Status::Ok();
}

}  // namespace kvcomm::kvstore
