// Which spans an anchor-making kvcomm turn computes in their true context, and which reports
// it makes.
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

TEST(ReportsWorthTheirCost, AReportIsDroppedWhenItWouldRecomputeFarMoreRealignedTokens) {
  const auto spans = Prompt();
  std::vector<bool> realigned(spans.size(), false);
  realigned[1] = true;  // the input (15 tokens) came realigned
  // Reporting the second message (7 + 2 template tokens) would recompute the input: 15 <= 4 x 9.
  EXPECT_EQ(ReportsWorthTheirCost({5}, spans, realigned), (std::vector<size_t>{5}));
  auto long_input = spans;
  long_input[1].end = 205;  // 200 tokens: no longer worth recomputing for 9 reported ones
  for (size_t i = 2; i < long_input.size(); ++i) {
    long_input[i].begin += 185;
    long_input[i].end += 185;
  }
  EXPECT_TRUE(ReportsWorthTheirCost({5}, long_input, realigned).empty());
  // Reports before the realigned span cost nothing and stay; the later one goes.
  std::vector<bool> later(spans.size(), false);
  later[3] = true;
  auto long_message = spans;
  long_message[3].end = 230;  // 207 tokens against 27 reported (input, message, labels)
  for (size_t i = 4; i < long_message.size(); ++i) {
    long_message[i].begin += 200;
    long_message[i].end += 200;
  }
  EXPECT_EQ(ReportsWorthTheirCost({5, 1}, long_message, later), (std::vector<size_t>{1}));
  EXPECT_TRUE(ReportsWorthTheirCost({}, spans, realigned).empty());
}

TEST(KeepSlots, KeepsTheKeptSlotsRealignedSpansWithTheTemplateAfterThemAndEveryExactSpan) {
  const auto spans = Prompt();
  const SpanSource exact = SpanSource::kExact, realigned = SpanSource::kRealigned,
                   computed = SpanSource::kComputed;
  const std::vector<SpanSource> source = {exact,     realigned, realigned, realigned,
                                          realigned, computed,  realigned};
  const std::vector<std::string> m0 = {"m0"}, in_and_m1 = {"in", "m1"}, none;
  EXPECT_EQ(KeepSlots(spans, source, m0),
            (std::vector<SpanSource>{exact, computed, computed, realigned, realigned, computed,
                                     computed}));
  // The cue after m1 goes with m1's slot, even where m1 itself was computed.
  EXPECT_EQ(KeepSlots(spans, source, in_and_m1),
            (std::vector<SpanSource>{exact, realigned, realigned, computed, computed, computed,
                                     realigned}));
  EXPECT_EQ(
      KeepSlots(spans, source, none),
      (std::vector<SpanSource>{exact, computed, computed, computed, computed, computed, computed}));
}

}  // namespace
}  // namespace kvcomm::pipeline
