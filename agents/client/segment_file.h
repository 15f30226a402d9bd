// Segment files: how KV segments live on disk outside kvcommd (kvcommctl put / get).
//
// A safetensors file with tensors `k` and `v` shaped [layers, kv_heads, tokens, head_dim]
// (F32, F16 or BF16, both the same), optional `token_ids` and `positions` (I32, [tokens]), and
// in `__metadata__`: `fingerprint` (32 hex digits), `namespace`, `prefix_hash` (32 hex digits)
// and `first_position`, all optional. Without a fingerprint the model is derived from the KV
// shape (FingerprintFromShape); without a namespace the caller's default applies.
#pragma once

#include <optional>
#include <string>

#include "agents/client/client.h"

namespace kvcomm::client {

struct SegmentFile {
  PutRequest segment;  // payload in the kvstore layout ([layer][K|V]...)
  ModelFingerprint fingerprint;
  std::optional<std::string> name_space;
};

// Reads and validates a segment file, naming what is wrong with it.
Result<SegmentFile> ReadSegmentFile(const std::string& path);
// Writes a segment fetched from kvcommd in the same format (ReadSegmentFile of it yields the
// same payload bytes, token ids, positions and metadata).
Status WriteSegmentFile(const std::string& path, const SegmentData& segment);

}  // namespace kvcomm::client
