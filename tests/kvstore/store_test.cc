#include "kvstore/store.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "tests/kvstore/disk_damage.h"
#include "tests/kvstore/test_segments.h"

namespace kvcomm::kvstore {
namespace {

using kvcomm::testing::MakeSegment;
using kvcomm::testing::TempDir;

const Scope kScope{"test", std::nullopt};

class StoreTest : public ::testing::Test {
 protected:
  void TearDown() override {
    store_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  void Open(uint64_t host_capacity, bool persist, uint64_t disk_capacity = 0) {
    store_.reset();
    if (persist && dir_.empty()) dir_ = TempDir("store");
    StoreOptions options;
    options.host_capacity_bytes = host_capacity;
    options.persist = persist;
    options.data_dir = dir_;
    options.disk_capacity_bytes = disk_capacity;
    auto opened = TieredStore::Open(options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
  }
  TierKind Where(const Segment& s) {
    return store_->Lookup({{s.meta.context_key, KeyKind::kContext}}, kScope)[0].tier;
  }
  void ExpectSameBytes(const Segment& expected) {
    auto got = store_->Get(expected.meta.context_key, KeyKind::kContext, kScope);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_EQ(got->payload.size(), expected.payload.size());
    EXPECT_EQ(std::memcmp(got->payload.data(), expected.payload.data(), expected.payload.size()),
              0);
  }
  std::unique_ptr<TieredStore> store_;
  std::string dir_;
};

TEST_F(StoreTest, PutGoesToHostAndWritesThroughToDisk) {
  Open(1 << 20, true);
  auto a = MakeSegment(16, 1);
  ASSERT_TRUE(store_->Put(a.meta, a.payload).ok());
  EXPECT_EQ(Where(a), TierKind::kHost);
  auto stats = store_->Stats();
  ASSERT_EQ(stats.tiers.size(), 2u);
  EXPECT_EQ(stats.tiers[0].segments, 1u);
  EXPECT_EQ(stats.tiers[1].segments, 1u);  // persisted
  ExpectSameBytes(a);
}

TEST_F(StoreTest, SamePayloadAgainKeepsHistoryDifferentPayloadReplaces) {
  Open(1 << 20, true);
  auto a = MakeSegment(16, 1);
  ASSERT_TRUE(store_->Put(a.meta, a.payload).ok());
  ASSERT_TRUE(store_->Get(a.meta.context_key, KeyKind::kContext, kScope).ok());
  auto again = store_->Put(a.meta, a.payload);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->access_count, 1u);
  auto changed = MakeSegment(16, 2);
  changed.meta.context_key = a.meta.context_key;  // same key, other bytes
  ASSERT_TRUE(store_->Put(changed.meta, changed.payload).ok());
  ExpectSameBytes(changed);
  EXPECT_EQ(store_->Stats().segments, 1u);
  EXPECT_EQ(store_->Stats().tiers[1].bytes, changed.payload.size());
}

TEST_F(StoreTest, FullHostTierDemotesColdestToDisk) {
  auto a = MakeSegment(16, 1), b = MakeSegment(16, 2), c = MakeSegment(16, 3);
  Open(a.payload.size() * 2 + 100, true);
  ASSERT_TRUE(store_->Put(a.meta, a.payload).ok());
  ASSERT_TRUE(store_->Put(b.meta, b.payload).ok());
  ASSERT_TRUE(store_->Get(a.meta.context_key, KeyKind::kContext, kScope).ok());  // b is now coldest
  ASSERT_TRUE(store_->Put(c.meta, c.payload).ok());
  EXPECT_EQ(Where(a), TierKind::kHost);
  EXPECT_EQ(Where(b), TierKind::kDisk);
  EXPECT_EQ(Where(c), TierKind::kHost);
  auto stats = store_->Stats();
  EXPECT_EQ(stats.demotions, 1u);
  EXPECT_EQ(stats.evictions, 0u);
  EXPECT_LE(stats.tiers[0].bytes, a.payload.size() * 2 + 100);
}

TEST_F(StoreTest, ReadFromDiskPromotesToHostAndCountsHitsAndMisses) {
  auto a = MakeSegment(16, 1), b = MakeSegment(16, 2);
  Open(a.payload.size() + 100, true);  // host holds one
  ASSERT_TRUE(store_->Put(a.meta, a.payload).ok());
  ASSERT_TRUE(store_->Put(b.meta, b.payload).ok());
  EXPECT_EQ(Where(a), TierKind::kDisk);
  ExpectSameBytes(a);
  EXPECT_EQ(Where(a), TierKind::kHost);
  EXPECT_EQ(Where(b), TierKind::kDisk);
  auto stats = store_->Stats();
  EXPECT_EQ(stats.promotions, 1u);
  EXPECT_EQ(stats.tiers[0].misses, 1u);  // host missed
  EXPECT_EQ(stats.tiers[1].hits, 1u);    // disk hit
}

TEST_F(StoreTest, WithoutPersistenceFallingOffHostIsACountedEviction) {
  auto a = MakeSegment(16, 1), b = MakeSegment(16, 2);
  Open(a.payload.size() + 100, false);
  ASSERT_TRUE(store_->Put(a.meta, a.payload).ok());
  ASSERT_TRUE(store_->Put(b.meta, b.payload).ok());
  EXPECT_EQ(store_->Get(a.meta.context_key, KeyKind::kContext, kScope).status().code(),
            ErrorCode::kNotFound);
  ExpectSameBytes(b);
  auto stats = store_->Stats();
  EXPECT_EQ(stats.evictions, 1u);
  EXPECT_EQ(stats.segments, 1u);
}

TEST_F(StoreTest, FullDiskEvictsItsColdestSegment) {
  auto a = MakeSegment(16, 1), b = MakeSegment(16, 2), c = MakeSegment(16, 3);
  Open(a.payload.size() + 100, true, a.payload.size() * 2 + 100);
  for (auto* s : {&a, &b, &c}) ASSERT_TRUE(store_->Put(s->meta, s->payload).ok());
  EXPECT_EQ(store_->Get(a.meta.context_key, KeyKind::kContext, kScope).status().code(),
            ErrorCode::kNotFound);
  ExpectSameBytes(b);
  ExpectSameBytes(c);
  EXPECT_EQ(store_->Stats().evictions, 1u);
}

TEST_F(StoreTest, SegmentLargerThanEveryTierIsRefused) {
  auto big = MakeSegment(256, 1);
  Open(big.payload.size() - 1, false);
  auto put = store_->Put(big.meta, big.payload);
  EXPECT_EQ(put.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_EQ(store_->Stats().segments, 0u);
}

TEST_F(StoreTest, SegmentLargerThanHostGoesToDiskOnly) {
  auto big = MakeSegment(256, 1);
  Open(big.payload.size() / 2, true);
  ASSERT_TRUE(store_->Put(big.meta, big.payload).ok());
  EXPECT_EQ(Where(big), TierKind::kDisk);
  ExpectSameBytes(big);
}

TEST_F(StoreTest, ReopenKeepsPersistedSegmentsAndAccessCounts) {
  auto a = MakeSegment(16, 1), b = MakeSegment(24, 2);
  Open(1 << 20, true);
  ASSERT_TRUE(store_->Put(a.meta, a.payload).ok());
  ASSERT_TRUE(store_->Put(b.meta, b.payload).ok());
  ASSERT_TRUE(store_->Get(a.meta.context_key, KeyKind::kContext, kScope).ok());
  ASSERT_TRUE(store_->Get(a.meta.context_key, KeyKind::kContext, kScope).ok());
  Open(1 << 20, true);  // closes (flushing) and reopens the same directory
  EXPECT_EQ(store_->Stats().segments, 2u);
  EXPECT_EQ(Where(a), TierKind::kDisk);
  auto got = store_->Get(a.meta.context_key, KeyKind::kContext, kScope);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->meta.access_count, 3u);
  EXPECT_EQ(got->meta.token_ids, a.meta.token_ids);
  ExpectSameBytes(b);
}

TEST_F(StoreTest, CorruptDiskRecordIsReportedCountedAndDropped) {
  auto a = MakeSegment(64, 1);
  Open(1 << 20, true);
  ASSERT_TRUE(store_->Put(a.meta, a.payload).ok());
  store_.reset();
  kvcomm::testing::FlipBitInFirstPayload(dir_);
  Open(1 << 20, true);
  auto got = store_->Get(a.meta.context_key, KeyKind::kContext, kScope);
  EXPECT_EQ(got.status().code(), ErrorCode::kDataLoss);
  EXPECT_EQ(store_->Get(a.meta.context_key, KeyKind::kContext, kScope).status().code(),
            ErrorCode::kNotFound);
  auto stats = store_->Stats();
  EXPECT_EQ(stats.corrupt_records, 1u);
  EXPECT_EQ(stats.segments, 0u);
}

TEST_F(StoreTest, NamedRecordsPersistByPrefixAndDamagedOnesAreDropped) {
  Open(1 << 20, true);
  ASSERT_TRUE(store_->PutRecord("pool/a", "first").ok());
  ASSERT_TRUE(store_->PutRecord("pool/b", std::string("with\0zero", 9)).ok());
  ASSERT_TRUE(store_->PutRecord("other/a", "elsewhere").ok());
  ASSERT_TRUE(store_->PutRecord("pool/a", "replaced").ok());
  Open(1 << 20, true);
  auto records = store_->Records("pool/");
  ASSERT_TRUE(records.ok()) << records.status().ToString();
  ASSERT_EQ(records->size(), 2u);
  EXPECT_EQ((*records)[0], (std::pair<std::string, std::string>{"pool/a", "replaced"}));
  EXPECT_EQ((*records)[1].second, std::string("with\0zero", 9));
  ASSERT_TRUE(store_->DeleteRecord("pool/a").ok());
  EXPECT_EQ(store_->Records("pool/")->size(), 1u);
  // A record that fails its checksum is never returned, and is deleted.
  store_.reset();
  kvcomm::testing::FlipBitInFirstRecord(dir_);  // "other/a", the first in key order
  Open(1 << 20, true);
  uint64_t dropped = 0;
  EXPECT_EQ(store_->Records("other/", &dropped)->size(), 0u);
  EXPECT_EQ(dropped, 1u);
  EXPECT_EQ(store_->Records("pool/")->size(), 1u);
  // Without a disk tier records are accepted and kept nowhere.
  store_.reset();
  std::filesystem::remove_all(dir_);
  dir_.clear();
  Open(1 << 20, false);
  EXPECT_TRUE(store_->PutRecord("pool/a", "x").ok());
  EXPECT_EQ(store_->Records("pool/")->size(), 0u);
}

TEST_F(StoreTest, ContentKeyFindsTheSameTextAfterAnyPrefix) {
  Open(1 << 20, false);
  auto a = MakeSegment(16, 1);
  Segment b = a;  // same tokens, different preceding text
  b.meta.prefix_hash = TokenPrefixHash(std::vector<int32_t>{1, 2, 3});
  b.meta.context_key =
      ComputeContextKey(b.meta.fingerprint, "test", b.meta.prefix_hash, b.meta.token_ids);
  ASSERT_TRUE(store_->Put(a.meta, a.payload).ok());
  ASSERT_TRUE(store_->Put(b.meta, b.payload).ok());
  EXPECT_EQ(store_->Stats().segments, 2u);
  auto got = store_->Get(a.meta.content_key, KeyKind::kContent, kScope);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->meta.content_key, a.meta.content_key);
  ASSERT_TRUE(store_->Delete(a.meta.context_key, kScope).ok());
  ASSERT_TRUE(store_->Delete(b.meta.context_key, kScope).ok());
  EXPECT_EQ(store_->Get(a.meta.content_key, KeyKind::kContent, kScope).status().code(),
            ErrorCode::kNotFound);
}

TEST_F(StoreTest, NamespacesAndModelsDoNotMix) {
  Open(1 << 20, false);
  auto a = MakeSegment(16, 1, "tenant-a");
  ASSERT_TRUE(store_->Put(a.meta, a.payload).ok());
  EXPECT_EQ(store_->Get(a.meta.context_key, KeyKind::kContext, {"tenant-b", std::nullopt})
                .status()
                .code(),
            ErrorCode::kNotFound);
  EXPECT_EQ(store_->Delete(a.meta.context_key, {"tenant-b", std::nullopt}).code(),
            ErrorCode::kNotFound);
  Scope other_model{"tenant-a", FingerprintFromShape(99, 1, 1, DType::kF32)};
  EXPECT_EQ(store_->Get(a.meta.context_key, KeyKind::kContext, other_model).status().code(),
            ErrorCode::kFingerprintMismatch);
  EXPECT_TRUE(
      store_->Get(a.meta.context_key, KeyKind::kContext, {"tenant-a", a.meta.fingerprint}).ok());
}

TEST_F(StoreTest, ListPagesThroughOneNamespaceInKeyOrder) {
  Open(1 << 22, false);
  for (int i = 0; i < 25; ++i) {
    auto s = MakeSegment(4, 100 + i, i % 5 == 0 ? "other" : "test");
    ASSERT_TRUE(store_->Put(s.meta, s.payload).ok());
  }
  std::vector<SegmentKey> seen;
  std::optional<SegmentKey> after;
  bool more = true;
  while (more) {
    auto page = store_->List(kScope, after, 7, &more);
    for (const auto& l : page) {
      EXPECT_EQ(l.meta.name_space, "test");
      seen.push_back(l.meta.context_key);
    }
    if (!page.empty()) after = page.back().meta.context_key;
  }
  EXPECT_EQ(seen.size(), 20u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
}

TEST_F(StoreTest, RandomWorkloadNeverExceedsCapacityAndNeverReturnsWrongBytes) {
  const uint64_t host_capacity = 40'000, disk_capacity = 120'000;
  Open(host_capacity, true, disk_capacity);
  std::mt19937 rng(5);
  std::map<SegmentKey, Segment> written;
  for (int step = 0; step < 600; ++step) {
    int op = rng() % 10;
    if (op < 5 || written.empty()) {
      auto s = MakeSegment(1 + rng() % 96, rng());
      if (store_->Put(s.meta, s.payload).ok()) written[s.meta.context_key] = s;
    } else {
      auto it = std::next(written.begin(), rng() % written.size());
      if (op < 9) {
        auto got = store_->Get(it->first, KeyKind::kContext, kScope);
        if (got.ok()) {
          ASSERT_EQ(got->payload.size(), it->second.payload.size());
          ASSERT_EQ(
              std::memcmp(got->payload.data(), it->second.payload.data(), got->payload.size()), 0);
        } else {
          ASSERT_EQ(got.status().code(), ErrorCode::kNotFound);  // evicted, never corrupt
          written.erase(it);
        }
      } else {
        store_->Delete(it->first, kScope).ok();
        written.erase(it);
      }
    }
    auto stats = store_->Stats();
    ASSERT_LE(stats.tiers[0].bytes, host_capacity);
    ASSERT_LE(stats.tiers[1].bytes, disk_capacity);
  }
  EXPECT_GT(store_->Stats().evictions, 0u);
  EXPECT_GT(store_->Stats().demotions, 0u);
}

TEST_F(StoreTest, ConcurrentClientsPutAndGetIntactBytes) {
  Open(200'000, true);
  constexpr int kThreads = 8, kPerThread = 60;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto s = MakeSegment(8 + i % 40, t * 1000 + i);
        if (!store_->Put(s.meta, s.payload).ok()) ++failures;
        auto got = store_->Get(s.meta.context_key, KeyKind::kContext, kScope);
        if (!got.ok() || got->payload.size() != s.payload.size() ||
            std::memcmp(got->payload.data(), s.payload.data(), s.payload.size()) != 0) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto stats = store_->Stats();
  EXPECT_EQ(stats.puts, uint64_t{kThreads * kPerThread});
  EXPECT_EQ(stats.segments, uint64_t{kThreads * kPerThread});
  EXPECT_LE(stats.tiers[0].bytes, 200'000u);
}

}  // namespace
}  // namespace kvcomm::kvstore
