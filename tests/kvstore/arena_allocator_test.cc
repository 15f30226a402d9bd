#include "common/arena_allocator.h"

#include <gtest/gtest.h>

#include <random>

namespace kvcomm {
namespace {

TEST(ArenaAllocator, AllocatesFirstFitAndCoalescesFreedNeighbours) {
  ArenaAllocator arena(4096, 256);
  auto a = arena.Allocate(1000);  // rounds to 1024
  auto b = arena.Allocate(1024);
  auto c = arena.Allocate(2048);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(*a, 0u);
  EXPECT_EQ(*b, 1024u);
  EXPECT_EQ(*c, 2048u);
  EXPECT_FALSE(arena.Allocate(1));
  arena.Free(*a);
  arena.Free(*b);
  EXPECT_TRUE(arena.CanAllocate(2048));  // a and b merged
  EXPECT_FALSE(arena.CanAllocate(2049));
  arena.Free(*c);
  EXPECT_EQ(arena.allocated_bytes(), 0u);
  EXPECT_TRUE(arena.CanAllocate(4096));
}

TEST(ArenaAllocator, RandomAllocFreeNeverOverlapsOrExceedsCapacity) {
  ArenaAllocator arena(1 << 20, 256);
  std::mt19937 rng(11);
  std::map<uint64_t, uint64_t> live;  // offset -> rounded size
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      uint64_t size = 1 + rng() % 20000;
      auto at = arena.Allocate(size);
      if (!at) continue;
      auto next = live.lower_bound(*at);
      ASSERT_TRUE(next == live.end() || *at + arena.RoundUp(size) <= next->first);
      if (next != live.begin()) {
        auto prev = std::prev(next);
        ASSERT_LE(prev->first + prev->second, *at);
      }
      ASSERT_LE(*at + arena.RoundUp(size), arena.capacity());
      live[*at] = arena.RoundUp(size);
    } else {
      auto it = std::next(live.begin(), rng() % live.size());
      arena.Free(it->first);
      live.erase(it);
    }
  }
  for (auto& [offset, size] : live) arena.Free(offset);
  EXPECT_TRUE(arena.CanAllocate(1 << 20));
}

}  // namespace
}  // namespace kvcomm
