#include "daemon/reuse_checks.h"

#include <gtest/gtest.h>

namespace kvcomm::daemon {
namespace {

const Hash128 kModel{7, 7};

class ReuseChecksTest : public ::testing::Test {
 protected:
  bool Plan(const std::vector<std::string>& slots, const std::string& agent = "a") {
    return checks_.PlanEstimated("ns", kModel, slots, agent);
  }
  Status Record(const std::vector<std::string>& slots, bool changed, const std::string& agent = "a",
                const std::vector<std::string>& blamed = {}) {
    return checks_.Record("ns", kModel, slots, blamed, agent, changed, 0.05);
  }
  CheckTally Tally(const std::string& slot, const std::string& agent = "a",
                   bool family = false) const {
    for (const auto& entry : checks_.Snapshot())
      if (entry.key.slot == slot && entry.key.agent == agent && entry.family == family)
        return entry.tally;
    ADD_FAILURE() << "no tally for " << slot << " / " << agent;
    return CheckTally{};
  }
  bool Estimates(const std::string& slot, const std::string& agent = "a") const {
    return checks_.Estimates({"ns", kModel, slot, agent});
  }

  ReuseChecks checks_{ReuseCheckConfig{.first = 2, .every = 3, .max_changed = 0.25}};
};

TEST_F(ReuseChecksTest, TheFirstPlansOfASlotAreCheckedThenOneInEvery) {
  EXPECT_TRUE(Plan({"x"}));  // no check reported yet: asked again until `first` are in
  EXPECT_TRUE(Plan({"x"}));
  ASSERT_TRUE(Record({"x"}, false).ok());
  ASSERT_TRUE(Record({"x"}, false).ok());
  // The agent's plans are now counted 3, 4, 5, 6: one in three is checked.
  std::vector<bool> asked;
  for (int i = 0; i < 4; ++i) asked.push_back(Plan({"x"}));
  EXPECT_EQ(asked, (std::vector<bool>{true, false, false, true}));
  // A slot this agent never had checked is asked about at once, whatever the count.
  EXPECT_TRUE(Plan({"x", "y"}));
  EXPECT_TRUE(Estimates("x"));
}

TEST(SlotFamily, IsTheNameWithoutItsFinalIndex) {
  EXPECT_EQ(SlotFamily("message.2"), "message.*");
  EXPECT_EQ(SlotFamily("t.0/document.17"), "t.0/document.*");
  EXPECT_EQ(SlotFamily("t.0/input"), "");
  EXPECT_EQ(SlotFamily("message."), "");
  EXPECT_EQ(SlotFamily("message.2a"), "");
  EXPECT_EQ(SlotFamily("message.*"), "");
}

TEST(ChargedSlots, AreTheBlamedWithTheirFamiliesOrAllWhenNoneIsBlamed) {
  const std::vector<std::string> slots = {"in", "m.0", "m.1", "d.0"};
  using V = std::vector<std::string>;
  EXPECT_EQ(ChargedSlots(slots, V{"m.1"}, true), (V{"m.0", "m.1"}));
  EXPECT_EQ(ChargedSlots(slots, V{"in", "d.0"}, true), (V{"in", "d.0"}));
  EXPECT_EQ(ChargedSlots(slots, V{}, true), slots);
  EXPECT_TRUE(ChargedSlots(slots, V{}, false).empty());
}

TEST_F(ReuseChecksTest, AChangeNobodyMadeAloneIsSharedBySlotsAndTheirFamily) {
  Plan({"m.0", "m.1", "in"});
  Plan({"m.0"}, "b");
  ASSERT_TRUE(Record({"m.0", "m.1", "in"}, true).ok());
  EXPECT_TRUE(Estimates("m.0"));  // one check is not enough to judge
  Plan({"m.0", "m.1", "in"});
  ASSERT_TRUE(Record({"m.0", "m.1", "in"}, false).ok());
  // 1 of 2 changed, more than 25%: every slot the turns estimated, and the family.
  EXPECT_FALSE(Estimates("m.0"));
  EXPECT_FALSE(Estimates("in"));
  EXPECT_FALSE(Estimates("m.5"));  // a message never checked: its family is gated
  // And the agent: its replies changed too often, and no check cleared this slot.
  EXPECT_FALSE(Estimates("other"));
  EXPECT_TRUE(Estimates("m.0", "b"));  // another agent's tallies are its own

  EXPECT_EQ(Tally("m.0").checks, 2u);
  EXPECT_EQ(Tally("m.0").changed, 1u);
  EXPECT_NEAR(Tally("m.0").kl_sum, 0.1, 1e-12);
  EXPECT_EQ(Tally("m.*", "a", true).plans, 2u);  // once a turn, however many messages
  EXPECT_EQ(Tally("m.*", "a", true).checks, 2u);
  EXPECT_EQ(Tally("m.*", "a", true).changed, 1u);
  EXPECT_EQ(Tally("", "a").plans, 2u);  // the agent's own tally
  EXPECT_EQ(Tally("m.0", "b").checks, 0u);
}

TEST_F(ReuseChecksTest, AChangeCountsOnlyAgainstTheBlamedSlots) {
  for (int i = 0; i < 2; ++i) {
    Plan({"in", "m.0", "m.1"});
    ASSERT_TRUE(Record({"in", "m.0", "m.1"}, true, "a", {"m.1"}).ok());
  }
  // Estimated in both changed turns, blamed in neither: cleared, so the agent's tally (2 of 2
  // changed) does not stop it, as it does a slot no check cleared.
  EXPECT_TRUE(Estimates("in"));
  EXPECT_FALSE(Estimates("other"));
  // m.1's family shares the blame: m.0 was estimated alike in the same turns.
  EXPECT_FALSE(Estimates("m.1"));
  EXPECT_FALSE(Estimates("m.0"));
  EXPECT_FALSE(Estimates("m.7"));  // never checked, but of the family (2 of 2 changed)
  EXPECT_EQ(Tally("m.0").changed, 2u);
  EXPECT_EQ(Tally("m.*", "a", true).changed, 2u);
  EXPECT_EQ(Tally("in").checks, 2u);
  EXPECT_EQ(Tally("in").changed, 0u);
  EXPECT_EQ(Tally("m.1").changed, 2u);
  EXPECT_EQ(Tally("", "a").changed, 2u);  // the turns did change: the agent's tally says so
}

TEST_F(ReuseChecksTest, BlameMustNameCheckedSlotsOfAChangedReply) {
  Plan({"x", "y"});
  EXPECT_EQ(Record({"x", "y"}, true, "a", {"z"}).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(Record({"x", "y"}, false, "a", {"x"}).code(), ErrorCode::kInvalidArgument);
  for (const auto& entry : checks_.Snapshot()) EXPECT_EQ(entry.tally.checks, 0u);
}

TEST_F(ReuseChecksTest, AClearedSlotNeedsFirstChecksAndAnUnblamedFamily) {
  Plan({"in", "m.0"});
  ASSERT_TRUE(Record({"in", "m.0"}, true, "a", {"m.0"}).ok());
  for (int i = 0; i < 3; ++i) {
    Plan({"m.1", "x"});
    ASSERT_TRUE(Record({"m.1", "x"}, false).ok());
  }
  Plan({"y"});
  ASSERT_TRUE(Record({"y"}, true).ok());
  // The agent: 2 of 5 changed. "in" was checked once only; "m.1" three times without blame,
  // but its family was blamed once (1 of 4: not gated); "x" three times, never blamed.
  EXPECT_FALSE(Estimates("in"));
  EXPECT_FALSE(Estimates("m.1"));
  EXPECT_TRUE(Estimates("x"));
  EXPECT_FALSE(Estimates("y"));
}

TEST_F(ReuseChecksTest, ASlotCanStopBeingEstimatedWhileTheAgentsOtherSlotsGoOn) {
  for (int i = 0; i < 8; ++i) {
    Plan({"y"});
    ASSERT_TRUE(Record({"y"}, false).ok());
  }
  for (int i = 0; i < 2; ++i) {
    Plan({"x"});
    ASSERT_TRUE(Record({"x"}, true).ok());
  }
  EXPECT_FALSE(Estimates("x"));  // 2 of 2 changed
  EXPECT_TRUE(Estimates("y"));   // 0 of 8
  EXPECT_TRUE(Estimates("z"));   // the agent: 2 of 10, not over 25%
}

TEST_F(ReuseChecksTest, OutcomesForSlotsNeverEstimatedOrWithABadKlAreRefused) {
  Plan({"x"});
  EXPECT_EQ(Record({"x", "never"}, true).code(), ErrorCode::kNotFound);
  EXPECT_EQ(Record({"x"}, true, "b").code(), ErrorCode::kNotFound);
  const std::vector<std::string> x = {"x"}, none;
  EXPECT_EQ(checks_.Record("ns", kModel, x, none, "a", false, -1).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(checks_.Record("ns", kModel, x, none, "a", false, NAN).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(checks_.Record("ns", kModel, std::vector<std::string>{""}, none, "a", false, 0).code(),
            ErrorCode::kNotFound);  // the agent's own tally is not a slot
  // Nothing of a refused outcome was counted.
  for (const auto& entry : checks_.Snapshot()) EXPECT_EQ(entry.tally.checks, 0u);
}

TEST(ReuseChecks, FirstZeroTurnsChecksAndTheGateOff) {
  ReuseChecks checks(ReuseCheckConfig{.first = 0, .every = 1, .max_changed = 0});
  const std::vector<std::string> slots = {"x"};
  EXPECT_FALSE(checks.PlanEstimated("ns", kModel, slots, "a"));
  EXPECT_TRUE(checks.Estimates({"ns", kModel, "x", "a"}));
}

TEST(ReuseChecks, ConfigOutOfRangeIsRefused) {
  EXPECT_TRUE(ReuseCheckConfig{}.Validate().ok());
  EXPECT_FALSE((ReuseCheckConfig{.max_changed = 1.5}).Validate().ok());
  EXPECT_FALSE((ReuseCheckConfig{.max_changed = NAN}).Validate().ok());
  EXPECT_FALSE((ReuseCheckConfig{.first = 2'000'000}).Validate().ok());
}

}  // namespace
}  // namespace kvcomm::daemon
