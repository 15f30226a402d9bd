// Seeded normal random inputs for the kernel tests (never zeros), optionally rounded to bf16 so
// that a bf16 GPU kernel and the fp32 CPU reference start from the same numbers.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "common/dtype.h"

namespace kvcomm::testing {

inline std::vector<float> RandomNormal(size_t n, uint32_t seed, float stddev = 1.0f,
                                       bool round_to_bf16 = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> values(n);
  for (auto& x : values)
    x = round_to_bf16 ? BFloat16ToFloat(FloatToBFloat16(normal(rng))) : normal(rng);
  return values;
}

}  // namespace kvcomm::testing
