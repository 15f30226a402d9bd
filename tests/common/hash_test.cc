#include "common/hash.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <random>

#include "common/keys.h"
#include "common/status.h"

namespace kvcomm {
namespace {

TEST(Hash128, HexRoundTripsAndRejectsBadText) {
  Hash128 h{0x0123456789abcdefull, 0xfedcba9876543210ull};
  EXPECT_EQ(h.ToHex(), "0123456789abcdeffedcba9876543210");
  EXPECT_EQ(*Hash128::FromHex(h.ToHex()), h);
  EXPECT_EQ(*Hash128::FromHex("0123456789ABCDEFFEDCBA9876543210"), h);
  EXPECT_FALSE(Hash128::FromHex("0123").ok());
  EXPECT_FALSE(Hash128::FromHex("0123456789abcdeffedcba987654321g").ok());
}

// Stored segments carry these checksums: they must stay XXH3-64 whichever vector unit computes
// them (Checksum64 dispatches at run time; XXH3_64bits here is the library's SSE2 build).
TEST(Checksum64, IsXxh3OnEveryLength) {
  EXPECT_EQ(Checksum64({}), 0x2d06800538d394c2ull);  // XXH3-64 of no bytes, from its spec
  std::mt19937 rng(7);
  std::vector<std::byte> bytes((1 << 20) + 3);
  for (auto& b : bytes) b = static_cast<std::byte>(rng());
  for (size_t size : {size_t{1}, size_t{16}, size_t{17}, size_t{128}, size_t{129}, size_t{240},
                      size_t{241}, size_t{1024}, size_t{4099}, bytes.size()}) {
    SCOPED_TRACE(size);
    EXPECT_EQ(Checksum64(std::span(bytes).first(size)), XXH3_64bits(bytes.data(), size));
  }
  Hasher128 streamed;
  streamed.AddBytes(bytes);
  const XXH128_hash_t expected = [&] {
    XXH3_state_t* state = XXH3_createState();
    XXH3_128bits_reset(state);
    const uint64_t size = bytes.size();
    XXH3_128bits_update(state, &size, sizeof(size));
    XXH3_128bits_update(state, bytes.data(), bytes.size());
    const XXH128_hash_t h = XXH3_128bits_digest(state);
    XXH3_freeState(state);
    return h;
  }();
  EXPECT_EQ(streamed.Finish(), (Hash128{expected.high64, expected.low64}));
}

TEST(Keys, ContextKeyDependsOnPrefixAndContentKeyDoesNot) {
  ModelFingerprint model = FingerprintFromShape(32, 8, 128, DType::kBF16);
  std::vector<int32_t> tokens = {1, 2, 3};
  std::vector<int32_t> prefix_a = {9, 9}, prefix_b = {9, 8};
  SegmentKey ctx_a = ComputeContextKey(model, "ns", TokenPrefixHash(prefix_a), tokens);
  SegmentKey ctx_b = ComputeContextKey(model, "ns", TokenPrefixHash(prefix_b), tokens);
  EXPECT_NE(ctx_a, ctx_b);
  EXPECT_EQ(ctx_a, ComputeContextKey(model, "ns", TokenPrefixHash(prefix_a), tokens));
  EXPECT_EQ(ComputeContentKey(model, "ns", tokens), ComputeContentKey(model, "ns", tokens));
  EXPECT_NE(ComputeContentKey(model, "ns", tokens), ComputeContentKey(model, "other", tokens));
  EXPECT_NE(ComputeContentKey(model, "ns", tokens),
            ComputeContentKey(FingerprintFromShape(32, 8, 64, DType::kBF16), "ns", tokens));
  EXPECT_TRUE(TokenPrefixHash({}).IsZero());
}

TEST(Keys, ModelFingerprintCoversArchitectureAndWeights) {
  ModelArchitecture arch{"llama", 16, 8, 2, 64, 10000.0, "", DType::kBF16};
  Hash128 weights{1, 2};
  ModelFingerprint base = ComputeModelFingerprint(arch, weights);
  EXPECT_NE(base, ComputeModelFingerprint(arch, Hash128{1, 3}));
  arch.rope_theta = 500000.0;
  EXPECT_NE(base, ComputeModelFingerprint(arch, weights));
}

TEST(Keys, NamespaceValidation) {
  EXPECT_TRUE(ValidateNamespace("pipeline-1.rag:v2_a").ok());
  EXPECT_FALSE(ValidateNamespace("").ok());
  EXPECT_FALSE(ValidateNamespace("has space").ok());
  EXPECT_FALSE(ValidateNamespace(std::string(200, 'a')).ok());
}

TEST(Status, CarriesCodeMessageAndContext) {
  Status s = Error(ErrorCode::kNotFound, "segment {} missing", 7);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.ToString(), "NotFound: segment 7 missing");
  EXPECT_EQ(s.WithContext("get").ToString(), "NotFound: get: segment 7 missing");
  Result<int> r = s;
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound);
}

}  // namespace
}  // namespace kvcomm
