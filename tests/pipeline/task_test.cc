// The task-suite format: templates, task parsing and its errors, schedules, scoring.
#include "agents/pipeline/task.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace kvcomm::pipeline {
namespace {

const std::string kSuite = KVCOMM_SOURCE_DIR "/bench/tasks";

TemplateSet ShippedTemplates() {
  auto templates = LoadTemplates(kSuite + "/templates.toml");
  EXPECT_TRUE(templates.ok()) << templates.status().ToString();
  return templates.ok() ? *templates : TemplateSet{};
}

std::string WriteTemp(const std::string& name, const std::string& text) {
  auto path = std::filesystem::temp_directory_path() / ("kvcomm_pipeline_" + name);
  std::ofstream(path) << text;
  return path.string();
}

TEST(Templates, ShippedFileHasEveryTypeAndRole) {
  TemplateSet t = ShippedTemplates();
  EXPECT_EQ(t.size(), 12u);
  EXPECT_TRUE(t.at("fact_relay.0").roles.contains("reporter"));
  EXPECT_TRUE(t.at("aggregation.1").roles.contains("aggregator"));
  EXPECT_TRUE(t.at("long_context.2").roles.contains("answerer"));
  EXPECT_EQ(t.at("rag.0").cue, "Reply:\n");
}

TEST(Templates, BrokenFilesAreRefusedWithTheReason) {
  const std::string piece =
      "notes = \"n\\n\"\ninput = \"i\\n\"\ndocument = \"d\\n\"\n"
      "message = \"m\\n\"\n";
  struct Case {
    std::string text, expect;
  } cases[] = {
      {"[[template]]\nid = \"a\"\n" + piece +
           "cue = \"c\"\nroles.r.header = \"h\\n\"\n"
           "roles.r.instruction = \"x\\n\"\n",
       "'cue' must end with a newline"},
      {"[[template]]\nid = \"a\"\n" + piece + "roles.r.header = \"h\\n\"\n",
       "missing string 'cue'"},
      {"[[template]]\nid = \"a\"\n" + piece + "cue = \"c\\n\"\n", "no roles"},
      {"[[template]]\nid = \"a\"\n" + piece +
           "cue = \"c\\n\"\nroles.r.header = \"h\\n\"\n"
           "roles.r.instruction = \"x\\n\"\n[[template]]\nid = \"a\"\n" +
           piece +
           "cue = \"c\\n\"\n"
           "roles.r.header = \"h\\n\"\nroles.r.instruction = \"x\\n\"\n",
       "duplicate template id"},
      {"[[template]\n", "templates.toml"},
      {"x = 1\n", "no [[template]] entries"},
  };
  for (const auto& c : cases) {
    auto result = LoadTemplates(WriteTemp("templates.toml", c.text));
    ASSERT_FALSE(result.ok()) << c.text;
    EXPECT_NE(result.status().message().find(c.expect), std::string::npos)
        << result.status().message();
  }
}

TEST(Tasks, ShippedSuiteLoadsCompletely) {
  TemplateSet t = ShippedTemplates();
  for (const char* type : {"fact_relay", "aggregation", "rag", "long_context"}) {
    auto tasks = LoadTasks(kSuite + "/" + type + ".jsonl", t);
    ASSERT_TRUE(tasks.ok()) << tasks.status().ToString();
    EXPECT_GE(tasks->size(), 200u) << type;
    for (const Task& task : *tasks) EXPECT_EQ(task.type, type);
  }
}

TEST(Tasks, BadLinesAreRefusedWithTheReason) {
  TemplateSet t = ShippedTemplates();
  const std::string base = R"("id": "x", "type": "rag", "input": "q", "answer": "a")";
  struct Case {
    std::string line, expect;
  } cases[] = {
      {"not json", "not a JSON object"},
      {"{" + base + R"(, "template": "rag.0", "topology": "single"})", "'agents' must be a list"},
      {"{" + base +
           R"(, "template": "nope", "topology": "single", "agents": [{"name": "A", "role": "reader"}]})",
       "unknown template 'nope'"},
      {"{" + base +
           R"(, "template": "rag.0", "topology": "single", "agents": [{"name": "A", "role": "boss"}]})",
       "has no role 'boss'"},
      {"{" + base +
           R"(, "template": "rag.0", "topology": "mesh", "agents": [{"name": "A", "role": "reader"}]})",
       "unknown topology 'mesh'"},
      {"{" + base +
           R"(, "template": "rag.0", "topology": "single", "agents": [{"name": "A", "role": "reader"}, {"name": "B", "role": "reader"}]})",
       "exactly one agent"},
      {"{" + base +
           R"(, "template": "rag.0", "topology": "chain", "rounds": 0, "agents": [{"name": "A", "role": "reader"}]})",
       "'rounds' must be an integer"},
      {"{" + base +
           R"(, "template": "rag.0", "topology": "single", "scorer": "fuzzy", "agents": [{"name": "A", "role": "reader"}]})",
       "unknown scorer"},
      {"{" + base +
           R"(, "template": "rag.0", "topology": "single", "documents": [1], "agents": [{"name": "A", "role": "reader"}]})",
       "documents must be strings"},
      {R"({"id": "x", "type": "rag", "template": "rag.0", "topology": "single", "answer": "a", "agents": [{"name": "A", "role": "reader"}]})",
       "missing field 'input'"},
  };
  for (const auto& c : cases) {
    auto task = ParseTask(c.line, t);
    ASSERT_FALSE(task.ok()) << c.line;
    EXPECT_NE(task.status().message().find(c.expect), std::string::npos) << task.status().message();
  }
  auto file = LoadTasks(WriteTemp("tasks.jsonl", "\n" + cases[1].line + "\n"), t);
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("tasks.jsonl:2:"), std::string::npos);
  EXPECT_EQ(LoadTasks("/nonexistent/tasks.jsonl", t).status().code(), ErrorCode::kNotFound);
}

TEST(Schedule, ChainRoundsAndSingle) {
  Task task;
  task.agents = {{"A", "r", "", "", {}}, {"B", "r", "", "", {}}, {"C", "r", "", "", {}}};
  task.topology = Topology::kChain;
  auto chain = Schedule(task);
  ASSERT_EQ(chain.size(), 3u);
  EXPECT_EQ(chain[2].sees, (std::vector<int>{0, 1}));

  task.topology = Topology::kRounds;
  task.rounds = 2;
  auto rounds = Schedule(task);
  // Round 1: A, B (see nothing); round 2: A sees B's round-1 turn, B sees A's; then C.
  ASSERT_EQ(rounds.size(), 5u);
  EXPECT_TRUE(rounds[0].sees.empty());
  EXPECT_EQ(rounds[2].agent, 0);
  EXPECT_EQ(rounds[2].sees, (std::vector<int>{1}));
  EXPECT_EQ(rounds[3].sees, (std::vector<int>{0}));
  EXPECT_EQ(rounds[4].agent, 2);
  EXPECT_EQ(rounds[4].sees, (std::vector<int>{2, 3}));

  task.agents.resize(1);
  task.topology = Topology::kSingle;
  EXPECT_EQ(Schedule(task).size(), 1u);
}

TEST(Scoring, NormalizesCaseSpaceAndFinalPeriod) {
  Task task;
  task.answer = "Lyon";
  EXPECT_TRUE(IsCorrect(task, "  lyon. "));
  EXPECT_TRUE(IsCorrect(task, "LYON"));
  EXPECT_FALSE(IsCorrect(task, "Lyon is the city"));
  EXPECT_FALSE(IsCorrect(task, ""));
}

}  // namespace
}  // namespace kvcomm::pipeline
