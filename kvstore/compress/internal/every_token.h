// The methods that keep every token and only encode (kivi, gear, minicache), and MiKV's
// parameters; compress.cc dispatches to them.
#pragma once

#include <optional>
#include <utility>

#include "kvstore/compress/compress.h"

namespace kvcomm::kvstore::compress::internal {

// The encoding of an every-token method, or nullopt when `spec` names another method.
Result<std::optional<Compressed>> CompressEveryToken(const CompressRequest& request,
                                                     const MethodSpec& spec, const Budget& budget);

// MiKV's quantization of the evicted tokens, and the SnapKV scorer that picks the kept ones.
Result<std::pair<MixedParams, MethodSpec>> ParseMikv(const MethodSpec& spec,
                                                     const KvLayout& layout);

}  // namespace kvcomm::kvstore::compress::internal
