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
  Status Record(const std::vector<std::string>& slots, bool changed,
                const std::string& agent = "a") {
    return checks_.Record("ns", kModel, slots, agent, changed, 0.05);
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

TEST_F(ReuseChecksTest, AnAgentWhoseRepliesChangeTooOftenStopsBeingEstimated) {
  Plan({"x", "y"});
  Plan({"x"}, "b");
  ASSERT_TRUE(Record({"x", "y"}, true).ok());
  EXPECT_TRUE(Estimates("x"));  // one check is not enough to judge
  Plan({"x", "y"});
  ASSERT_TRUE(Record({"x", "y"}, false).ok());
  // 1 of 2 changed, more than 25%: the slots, and the agent as a whole (a turn's outcome is
  // shared by every slot it estimated, so it says as much about the agent).
  EXPECT_FALSE(Estimates("x"));
  EXPECT_FALSE(Estimates("y"));
  EXPECT_FALSE(Estimates("z"));
  EXPECT_TRUE(Estimates("x", "b"));  // another agent's tallies are its own

  const auto snapshot = checks_.Snapshot();
  auto tally = [&](const std::string& slot, const std::string& agent) {
    for (const auto& [key, t] : snapshot)
      if (key.slot == slot && key.agent == agent) return t;
    ADD_FAILURE() << "no tally for " << slot << " / " << agent;
    return CheckTally{};
  };
  EXPECT_EQ(tally("x", "a").checks, 2u);
  EXPECT_EQ(tally("x", "a").changed, 1u);
  EXPECT_NEAR(tally("x", "a").kl_sum, 0.1, 1e-12);
  EXPECT_EQ(tally("", "a").plans, 2u);  // the agent's own tally
  EXPECT_EQ(tally("", "a").checks, 2u);
  EXPECT_EQ(tally("x", "b").checks, 0u);
}

TEST_F(ReuseChecksTest, ASlotCanStopBeingEstimatedWhileTheAgentGoesOn) {
  for (int i = 0; i < 8; ++i) {
    Plan({"y"});
    ASSERT_TRUE(Record({"y"}, false).ok());
  }
  for (int i = 0; i < 2; ++i) {
    Plan({"x"});
    ASSERT_TRUE(Record({"x"}, true).ok());
  }
  EXPECT_FALSE(Estimates("x"));  // 2 of 2 changed
  EXPECT_TRUE(Estimates("y"));   // the agent: 2 of 10, not over 25%
  EXPECT_TRUE(Estimates("z"));
}

TEST_F(ReuseChecksTest, OutcomesForSlotsNeverEstimatedOrWithABadKlAreRefused) {
  Plan({"x"});
  EXPECT_EQ(Record({"x", "never"}, true).code(), ErrorCode::kNotFound);
  EXPECT_EQ(Record({"x"}, true, "b").code(), ErrorCode::kNotFound);
  EXPECT_EQ(checks_.Record("ns", kModel, std::vector<std::string>{"x"}, "a", false, -1).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(checks_.Record("ns", kModel, std::vector<std::string>{"x"}, "a", false, NAN).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(checks_.Record("ns", kModel, std::vector<std::string>{""}, "a", false, 0).code(),
            ErrorCode::kNotFound);  // the agent's own tally is not a slot
  // Nothing of a refused outcome was counted.
  for (const auto& [key, tally] : checks_.Snapshot()) EXPECT_EQ(tally.checks, 0u);
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
