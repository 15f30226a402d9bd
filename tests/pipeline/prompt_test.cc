// Prompt rendering and tokenization: the C++ renderer reproduces tools/make_tasks.py's prompts
// (tests/data/pipeline/rendered_turns.jsonl, written by `make_tasks.py --render-fixture`), and
// segment-by-segment tokenization with the shipped tokenizer equals tokenizing the whole prompt.
#include "agents/pipeline/prompt.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

namespace kvcomm::pipeline {
namespace {

const std::string kSuite = KVCOMM_SOURCE_DIR "/bench/tasks";

struct Fixture {
  TemplateSet templates;
  std::map<std::string, Task> tasks;
  std::vector<nlohmann::json> turns;
};

Fixture Load() {
  Fixture f;
  auto templates = LoadTemplates(kSuite + "/templates.toml");
  EXPECT_TRUE(templates.ok());
  f.templates = *templates;
  for (const char* type : {"fact_relay", "aggregation", "rag", "long_context"}) {
    auto tasks = LoadTasks(kSuite + "/" + type + ".jsonl", f.templates, 2);
    EXPECT_TRUE(tasks.ok());
    for (Task& t : *tasks) f.tasks[t.id] = t;
  }
  std::ifstream in(KVCOMM_SOURCE_DIR "/tests/data/pipeline/rendered_turns.jsonl");
  for (std::string line; std::getline(in, line);) f.turns.push_back(nlohmann::json::parse(line));
  return f;
}

std::vector<PromptSegment> Render(const Fixture& f, const nlohmann::json& turn) {
  const Task& task = f.tasks.at(turn["id"].get<std::string>());
  std::vector<Message> messages;
  for (const auto& m : turn["messages"]) messages.push_back({m[0], m[1]});
  return RenderPrompt(f.templates.at(task.template_id), task.agents[turn["agent"].get<int>()], task,
                      messages);
}

TEST(RenderPrompt, MatchesTheTrainingRenderer) {
  Fixture f = Load();
  ASSERT_GE(f.turns.size(), 20u);
  const std::map<std::string, SegmentKind> kinds = {{"text", SegmentKind::kText},
                                                    {"input", SegmentKind::kInput},
                                                    {"document", SegmentKind::kDocument},
                                                    {"message", SegmentKind::kMessage}};
  for (const auto& turn : f.turns) {
    auto segments = Render(f, turn);
    ASSERT_EQ(segments.size(), turn["segments"].size()) << turn["id"];
    for (size_t i = 0; i < segments.size(); ++i) {
      EXPECT_EQ(segments[i].kind, kinds.at(turn["segments"][i][0].get<std::string>()));
      EXPECT_EQ(segments[i].text, turn["segments"][i][1].get<std::string>())
          << turn["id"] << " turn " << turn["turn"] << " segment " << i;
    }
  }
}

TEST(TokenizePrompt, SegmentsTokenizeAsTheWholePrompt) {
  Fixture f = Load();
  auto tokenizer =
      runtime::Tokenizer::Load(KVCOMM_SOURCE_DIR "/models/kvcomm-tiny/tokenizer.model");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
  const int32_t bos = (*tokenizer)->bos_id();
  for (const auto& turn : f.turns) {
    auto segments = Render(f, turn);
    auto prompt = TokenizePrompt(**tokenizer, bos, segments);
    ASSERT_TRUE(prompt.ok());
    auto whole = (*tokenizer)->Encode(JoinText(segments));
    ASSERT_TRUE(whole.ok());
    whole->insert(whole->begin(), bos);
    EXPECT_EQ(prompt->tokens, *whole) << turn["id"];
    ASSERT_EQ(prompt->segment_begin.size(), segments.size());
    EXPECT_EQ(prompt->segment_begin[0], 1);
    // Each placeholder's tokens are its own tokenization, wherever it sits.
    for (size_t i = 0; i < segments.size(); ++i) {
      auto own = (*tokenizer)->Encode(segments[i].text);
      const int64_t end = i + 1 < segments.size() ? prompt->segment_begin[i + 1]
                                                  : static_cast<int64_t>(prompt->tokens.size());
      EXPECT_EQ(std::vector<int32_t>(prompt->tokens.begin() + prompt->segment_begin[i],
                                     prompt->tokens.begin() + end),
                *own);
    }
  }
}

}  // namespace
}  // namespace kvcomm::pipeline
