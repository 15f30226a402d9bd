#include "daemon/decision_memo.h"

#include <gtest/gtest.h>

namespace kvcomm::daemon {
namespace {

ReuseDecision Decision(double entropy) {
  ReuseDecision d;
  d.prefill = false;
  d.credited = {1};
  d.entropy = entropy;
  d.token_sums = {1.5f, 2.5f, static_cast<float>(entropy)};
  return d;
}

const SegmentKey kContent{1, 1}, kAnchorA{2, 2}, kAnchorB{3, 3};

TEST(DecisionMemo, FindsADecisionOnlyForTheSameBasesInTheSameOrder) {
  DecisionMemo memo(4);
  EXPECT_FALSE(memo.Find({kContent, kAnchorA, kAnchorB}));
  memo.Insert({kContent, kAnchorA, kAnchorB}, Decision(0.5));
  auto found = memo.Find({kContent, kAnchorA, kAnchorB});
  ASSERT_TRUE(found);
  EXPECT_FALSE(found->prefill);
  EXPECT_EQ(found->credited, std::vector<size_t>{1});
  EXPECT_EQ(found->entropy, 0.5);
  EXPECT_EQ(found->token_sums, (std::vector<float>{1.5f, 2.5f, 0.5f}));
  // The decision's indices refer to the candidates' order, and another candidate set is
  // another decision.
  EXPECT_FALSE(memo.Find({kContent, kAnchorB, kAnchorA}));
  EXPECT_FALSE(memo.Find({kContent, kAnchorA}));
  EXPECT_FALSE(memo.Find({kAnchorA, kAnchorA, kAnchorB}));
}

TEST(DecisionMemo, ForgetsTheLeastRecentlyUsedPastItsCapacity) {
  DecisionMemo memo(2);
  memo.Insert({kContent, kAnchorA}, Decision(0.1));
  memo.Insert({kContent, kAnchorB}, Decision(0.2));
  ASSERT_TRUE(memo.Find({kContent, kAnchorA}));  // now the most recently used
  memo.Insert({kAnchorA, kAnchorB}, Decision(0.3));
  EXPECT_EQ(memo.size(), 2u);
  EXPECT_TRUE(memo.Find({kContent, kAnchorA}));
  EXPECT_FALSE(memo.Find({kContent, kAnchorB}));
  EXPECT_TRUE(memo.Find({kAnchorA, kAnchorB}));
  // Inserting known bases replaces their decision without growing.
  memo.Insert({kAnchorA, kAnchorB}, Decision(0.4));
  EXPECT_EQ(memo.size(), 2u);
  EXPECT_EQ(memo.Find({kAnchorA, kAnchorB})->entropy, 0.4);
}

TEST(DecisionMemo, CapacityZeroRemembersNothing) {
  DecisionMemo memo(0);
  memo.Insert({kContent, kAnchorA}, Decision(0.1));
  EXPECT_FALSE(memo.Find({kContent, kAnchorA}));
  EXPECT_EQ(memo.size(), 0u);
}

}  // namespace
}  // namespace kvcomm::daemon
