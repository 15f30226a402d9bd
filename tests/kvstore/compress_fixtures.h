// Shared inputs of the compression tests: a small random segment, queries built to point at one
// token, and readers of what a token-subset encoding kept.
#pragma once

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "kvstore/compress/compress.h"

namespace kvcomm::kvstore::compress {

constexpr uint32_t kLayers = 3, kHeads = 2, kTokens = 64, kDim = 8;

inline KvLayout Layout(DType dtype = DType::kF32) {
  return {kLayers, kHeads, kTokens, kDim, dtype};
}

inline std::vector<float> RandomKv(uint32_t seed, const KvLayout& l = Layout()) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0, 1);
  std::vector<float> kv(uint64_t{l.num_layers} * 2 * l.ElementsPerHalf());
  for (auto& x : kv) x = normal(rng);
  return kv;
}

template <typename Kv>  // std::vector<float>, const or not
auto& At(Kv& kv, uint32_t layer, uint32_t half, uint32_t head, uint32_t token, uint32_t d) {
  return kv[((((uint64_t{layer} * 2 + half) * kHeads + head) * kTokens + token) * kDim) + d];
}

// Gives `token` a large key in every layer and head and returns the last `window` queries of
// 2 * kHeads query heads, all pointing at it: attention piles onto that token.
inline std::vector<float> QueriesPointingAt(std::vector<float>& kv, uint32_t token,
                                            int64_t window) {
  std::vector<float> queries(uint64_t{kLayers} * 2 * kHeads * window * kDim);
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t h = 0; h < kHeads; ++h)
      for (uint32_t d = 0; d < kDim; ++d) At(kv, l, 0, h, token, d) = 2.f;
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t qh = 0; qh < 2 * kHeads; ++qh)
      for (int64_t i = 0; i < window; ++i)
        for (uint32_t d = 0; d < kDim; ++d)
          queries[((uint64_t{l} * 2 * kHeads + qh) * window + i) * kDim + d] =
              5.f * At(kv, l, 0, qh / 2, token, d);
  return queries;
}

// Kept token indices of (layer, head) in a token-subset encoding.
inline std::vector<int32_t> KeptOf(const Compressed& c, uint32_t layer, uint32_t head) {
  auto subset = DecodeTokenSubset(c.bytes);
  EXPECT_TRUE(subset.ok()) << subset.status().ToString();
  size_t at = 0;
  for (uint32_t i = 0; i < layer * kHeads + head; ++i) at += subset->counts[i];
  const uint32_t n = subset->counts[layer * kHeads + head];
  return {subset->indices.begin() + at, subset->indices.begin() + at + n};
}

inline Result<Compressed> CompressKv(const std::vector<float>& kv, std::string method,
                                     std::string budget, std::string allocator = "uniform",
                                     const std::vector<float>* queries = nullptr,
                                     int64_t window = 0, DType dtype = DType::kF32) {
  CompressRequest r;
  r.layout = Layout(dtype);
  r.kv = kv;
  if (queries) {
    r.queries = *queries;
    r.q_heads = 2 * kHeads;
    r.window = window;
  }
  r.method = std::move(method);
  r.budget = std::move(budget);
  r.allocator = std::move(allocator);
  return Compress(r);
}

}  // namespace kvcomm::kvstore::compress
