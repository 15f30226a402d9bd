// Which spans an anchor-making kvcomm turn computes in their true context.
#include "agents/pipeline/segment_reuse.h"

#include <gtest/gtest.h>

namespace kvcomm::pipeline {
namespace {

// header | input | label | message | label | message | cue
std::vector<SegmentSpan> Prompt() {
  const SegmentKind text = SegmentKind::kText, input = SegmentKind::kInput,
                    message = SegmentKind::kMessage;
  return {{0, 5, text, ""},   {5, 20, input, "in"},    {20, 23, text, ""}, {23, 30, message, "m0"},
          {30, 33, text, ""}, {33, 40, message, "m1"}, {40, 42, text, ""}};
}

TEST(TrueContextEnd, NothingReportedNeedsNothingComputed) {
  EXPECT_EQ(TrueContextEnd({}, Prompt()), 0u);
}

TEST(TrueContextEnd, ReachesThroughTheTemplateSpanAfterTheLastReportedPlaceholder) {
  EXPECT_EQ(TrueContextEnd({1}, Prompt()), 3u);     // input and its label
  EXPECT_EQ(TrueContextEnd({1, 3}, Prompt()), 5u);  // the last report decides
  EXPECT_EQ(TrueContextEnd({3, 1}, Prompt()), 5u);
}

TEST(TrueContextEnd, APlaceholderFollowedByAnotherReportsOnlyItself) {
  auto spans = Prompt();
  spans[4].kind = SegmentKind::kMessage;  // two placeholders in a row
  spans[4].slot = "m9";
  EXPECT_EQ(TrueContextEnd({3}, spans), 4u);
  EXPECT_EQ(TrueContextEnd({5}, Prompt()), 7u);
}

}  // namespace
}  // namespace kvcomm::pipeline
