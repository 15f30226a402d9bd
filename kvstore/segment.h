// The segment data model: one run of tokens with its KV for every layer (common/kv_layout.h),
// plus the metadata the store keeps about it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/blob.h"
#include "common/keys.h"
#include "common/kv_layout.h"

namespace kvcomm::kvstore {

// Wire values match schemas/kvcomm.capnp's Tier.
enum class TierKind : uint8_t { kNone = 0, kGpu = 1, kHost = 2, kDisk = 3 };
std::string_view TierName(TierKind tier);

// Wire values match schemas/kvcomm.capnp's Codec.
enum class Codec : uint8_t { kRaw = 0 };

struct SegmentMeta {
  SegmentKey context_key;
  SegmentKey content_key;
  ModelFingerprint fingerprint;
  std::string name_space;
  KvLayout layout;
  Codec codec = Codec::kRaw;
  std::vector<int32_t> token_ids;  // empty when unknown
  std::vector<int32_t> positions;  // empty: first_position + i
  int32_t first_position = 0;
  Hash128 prefix_hash;  // hash of all tokens before the segment
  uint64_t payload_bytes = 0;
  uint64_t checksum = 0;  // Checksum64 of the payload
  int64_t created_unix_ms = 0;
  int64_t last_access_unix_ms = 0;
  uint64_t access_count = 0;
};

struct Segment {
  SegmentMeta meta;
  Blob payload;  // meta.payload_bytes bytes in meta.layout
};

int64_t NowUnixMs();

}  // namespace kvcomm::kvstore
