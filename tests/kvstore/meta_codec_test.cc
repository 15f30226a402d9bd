#include "kvstore/internal/meta_codec.h"

#include <gtest/gtest.h>

#include "tests/kvstore/test_segments.h"

namespace kvcomm::kvstore::internal {
namespace {

TEST(MetaCodec, RoundTripsEveryField) {
  auto segment = kvcomm::testing::MakeSegment(7, 5, "ns-1", DType::kBF16);
  SegmentMeta m = segment.meta;
  m.positions = {10, 11, 12, 13, 14, 15, 16};
  m.first_position = 10;
  m.prefix_hash = {3, 4};
  m.created_unix_ms = 123;
  m.last_access_unix_ms = 456;
  m.access_count = 9;
  auto decoded = DecodeMeta(EncodeMeta(m));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->context_key, m.context_key);
  EXPECT_EQ(decoded->content_key, m.content_key);
  EXPECT_EQ(decoded->name_space, "ns-1");
  EXPECT_EQ(decoded->layout, m.layout);
  EXPECT_EQ(decoded->token_ids, m.token_ids);
  EXPECT_EQ(decoded->positions, m.positions);
  EXPECT_EQ(decoded->prefix_hash, m.prefix_hash);
  EXPECT_EQ(decoded->checksum, m.checksum);
  EXPECT_EQ(decoded->access_count, 9u);
}

TEST(MetaCodec, EveryTruncationAndBitFlipOfLengthsIsRejectedOrConsistent) {
  auto segment = kvcomm::testing::MakeSegment(5, 6);
  std::string record = EncodeMeta(segment.meta);
  for (size_t cut = 0; cut < record.size(); ++cut) {
    EXPECT_EQ(DecodeMeta(record.substr(0, cut)).status().code(), ErrorCode::kDataLoss) << cut;
  }
  for (size_t i = 0; i < record.size(); ++i) {
    std::string damaged = record;
    damaged[i] ^= 0x40;
    auto decoded = DecodeMeta(damaged);  // may decode (a flipped key byte) but never crash
    if (decoded.ok()) {
      EXPECT_EQ(decoded->layout.PayloadBytes(), decoded->payload_bytes);
    }
  }
}

}  // namespace
}  // namespace kvcomm::kvstore::internal
