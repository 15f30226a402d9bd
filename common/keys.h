// Model fingerprints and segment keys (DESIGN.md, "Data model").
//
//   context key = hash(model, namespace, hash of all preceding tokens, token ids)  -> exact reuse
//   content key = hash(model, namespace, token ids)                                -> same text
//   anywhere
//
// All are 128-bit XXH3 hashes over length-delimited fields, so clients and the daemon compute
// the same keys independently.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/dtype.h"
#include "common/hash.h"

namespace kvcomm {

using ModelFingerprint = Hash128;
using SegmentKey = Hash128;

// The parts of a model that change its KV cache.
struct ModelArchitecture {
  std::string family;  // "llama", "qwen2", ...
  uint32_t num_layers = 0;
  uint32_t num_heads = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
  double rope_theta = 0;
  std::string rope_scaling;  // canonical text of the scaling config, empty if none
  DType dtype = DType::kBF16;
};

// Fingerprint of an architecture plus a hash of its weight files.
ModelFingerprint ComputeModelFingerprint(const ModelArchitecture& arch,
                                         const Hash128& weights_hash);

// Fingerprint for KV whose model is unknown (e.g. a segment file without metadata): derived
// from the KV shape only, so segments of different shapes never mix.
ModelFingerprint FingerprintFromShape(uint32_t num_layers, uint32_t kv_heads, uint32_t head_dim,
                                      DType dtype);

// Hash of the whole token sequence that precedes a segment. The empty prefix hashes to zero.
Hash128 TokenPrefixHash(std::span<const int32_t> preceding_tokens);

SegmentKey ComputeContextKey(const ModelFingerprint& model, std::string_view name_space,
                             const Hash128& prefix_hash, std::span<const int32_t> token_ids);
SegmentKey ComputeContentKey(const ModelFingerprint& model, std::string_view name_space,
                             std::span<const int32_t> token_ids);
// Keys of a segment that carries no token ids: the payload checksum stands in for them.
SegmentKey ComputeContextKeyFromPayload(const ModelFingerprint& model, std::string_view name_space,
                                        const Hash128& prefix_hash, uint64_t payload_checksum);
SegmentKey ComputeContentKeyFromPayload(const ModelFingerprint& model, std::string_view name_space,
                                        uint64_t payload_checksum);

// Namespaces are names chosen by users: 1..128 characters of [A-Za-z0-9._:-].
Status ValidateNamespace(std::string_view name_space);

}  // namespace kvcomm
