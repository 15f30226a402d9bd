#include "common/hash.h"

#include <gtest/gtest.h>

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
