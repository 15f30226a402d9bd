// Helpers for tests: segments with seeded random payloads and consistent keys.
#pragma once

#include <string>

#include "kvstore/segment.h"

namespace kvcomm::testing {

// A segment of `tokens` tokens (2 layers, 2 kv heads, head_dim 8, F32 unless given) whose
// payload bytes are random from `seed`; keys are derived from the token ids as the daemon does.
kvstore::Segment MakeSegment(uint32_t tokens, uint64_t seed, const std::string& name_space = "test",
                             DType dtype = DType::kF32);
// A fresh temporary directory under $TMPDIR (removed by the caller or left for inspection).
std::string TempDir(const std::string& label);

}  // namespace kvcomm::testing
