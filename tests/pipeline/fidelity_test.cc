// The fidelity measures of reuse modes: KL divergence of next-token distributions, and which
// slots a changed reply is blamed on.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "agents/pipeline/runner.h"
#include "agents/pipeline/turn.h"

namespace kvcomm::pipeline {
namespace {

TEST(KlDivergence, ZeroForTheSameDistributionWhateverTheShift) {
  const std::vector<float> a = {1.5f, -2.0f, 0.25f, 3.0f};
  const std::vector<float> shifted = {11.5f, 8.0f, 10.25f, 13.0f};  // same softmax
  EXPECT_NEAR(KlDivergence(a, a), 0.0, 1e-12);
  EXPECT_NEAR(KlDivergence(a, shifted), 0.0, 1e-9);
}

TEST(KlDivergence, MatchesTheFormulaOnTwoTokens) {
  // P = softmax(0, 0) = (1/2, 1/2); Q = softmax(0, log 3) = (1/4, 3/4).
  const std::vector<float> p = {0.0f, 0.0f};
  const std::vector<float> q = {0.0f, static_cast<float>(std::log(3.0))};
  const double expected = 0.5 * std::log(0.5 / 0.25) + 0.5 * std::log(0.5 / 0.75);
  EXPECT_NEAR(KlDivergence(p, q), expected, 1e-7);
  EXPECT_GT(KlDivergence(q, p), 0.0);
}

// A fake turn: the reply is "wrong" when the kept estimates include `alone_enough`, or all of
// `together`; else "right" (the full prefill's reply).
KeptSlotsReply FakeTurn(std::set<std::string> alone_enough, std::set<std::string> together,
                        int* calls) {
  return [=](std::span<const std::string> kept) -> Result<std::string> {
    ++*calls;
    size_t of_together = 0;
    for (const std::string& slot : kept) {
      if (alone_enough.contains(slot)) return std::string("wrong");
      of_together += together.contains(slot);
    }
    return std::string(!together.empty() && of_together == together.size() ? "wrong" : "right");
  };
}

TEST(BlamedSlots, ASlotThatChangesTheReplyAloneIsBlamedAndTheOthersAreNot) {
  int calls = 0;
  auto blamed = BlamedSlots({"in", "m.0", "m.1"}, "right", FakeTurn({"m.1"}, {}, &calls));
  ASSERT_TRUE(blamed.ok());
  EXPECT_EQ(*blamed, (std::vector<std::string>{"m.1"}));
  EXPECT_EQ(calls, 6);  // each slot alone and each left out
}

TEST(BlamedSlots, SlotsThatChangeItOnlyTogetherAreAllBlamed) {
  int calls = 0;
  auto blamed = BlamedSlots({"in", "m.0", "m.1"}, "right", FakeTurn({}, {"m.0", "m.1"}, &calls));
  ASSERT_TRUE(blamed.ok());
  EXPECT_EQ(*blamed, (std::vector<std::string>{"m.0", "m.1"}));
}

TEST(BlamedSlots, TwoSlotsThatEachChangeItAloneAreBothBlamed) {
  int calls = 0;
  // Either alone changes the reply, so leaving one out does not undo it: both are still
  // blamed, as each changes it alone.
  auto blamed = BlamedSlots({"a", "b"}, "right", FakeTurn({"a", "b"}, {}, &calls));
  ASSERT_TRUE(blamed.ok());
  EXPECT_EQ(*blamed, (std::vector<std::string>{"a", "b"}));
}

TEST(BlamedSlots, AFailedReplyIsPassedOn) {
  auto blamed = BlamedSlots({"a", "b"}, "right", [](std::span<const std::string>) {
    return Result<std::string>(Error(ErrorCode::kInternal, "out of memory"));
  });
  EXPECT_EQ(blamed.status().code(), ErrorCode::kInternal);
}

}  // namespace
}  // namespace kvcomm::pipeline
