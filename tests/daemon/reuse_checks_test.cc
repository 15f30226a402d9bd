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

TEST_F(ReuseChecksTest, ASlotWhoseEstimatesChangeRepliesStopsBeingEstimatedForThatAgent) {
  Plan({"x", "y"});
  Plan({"x"}, "b");
  ASSERT_TRUE(Record({"x", "y"}, true).ok());
  EXPECT_TRUE(Estimates("x"));  // one check is not enough to judge
  Plan({"x", "y"});
  ASSERT_TRUE(Record({"x", "y"}, false).ok());
  EXPECT_FALSE(Estimates("x"));  // 1 of 2 changed: more than 25%
  EXPECT_FALSE(Estimates("y"));
  EXPECT_TRUE(Estimates("x", "b"));  // another agent's tally is its own
  EXPECT_TRUE(Estimates("z"));

  const auto snapshot = checks_.Snapshot();
  ASSERT_EQ(snapshot.size(), 3u);
  EXPECT_EQ(snapshot[0].first.slot, "x");
  EXPECT_EQ(snapshot[0].first.agent, "a");
  EXPECT_EQ(snapshot[0].second.checks, 2u);
  EXPECT_EQ(snapshot[0].second.changed, 1u);
  EXPECT_NEAR(snapshot[0].second.kl_sum, 0.1, 1e-12);
}

TEST_F(ReuseChecksTest, OutcomesForSlotsNeverEstimatedOrWithABadKlAreRefused) {
  Plan({"x"});
  EXPECT_EQ(Record({"x", "never"}, true).code(), ErrorCode::kNotFound);
  EXPECT_EQ(Record({"x"}, true, "b").code(), ErrorCode::kNotFound);
  EXPECT_EQ(checks_.Record("ns", kModel, std::vector<std::string>{"x"}, "a", false, -1).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(checks_.Record("ns", kModel, std::vector<std::string>{"x"}, "a", false, NAN).code(),
            ErrorCode::kInvalidArgument);
  // Nothing of a refused outcome was counted.
  EXPECT_EQ(checks_.Snapshot().front().second.checks, 0u);
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
