// Pipeline files: the shipped examples load and bind to their inputs, DAG schedules follow the
// edges, and broken files are refused with the reason.
#include "agents/pipeline/pipeline_spec.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace kvcomm::pipeline {
namespace {

const std::string kRoot = KVCOMM_SOURCE_DIR;

std::string WritePipeline(const std::string& name, const std::string& text) {
  auto path = std::filesystem::temp_directory_path() / ("kvcomm_pipeline_spec_" + name);
  std::ofstream(path) << text;
  return path.string();
}

// A minimal valid head: the example templates (absolute, so the file may live anywhere).
std::string Head(const std::string& extra = "") {
  return "name = \"t\"\ntemplates = \"" + kRoot + "/examples/templates.toml\"\ntasks = [\"" +
         kRoot + "/examples/data/code_requests.jsonl\"]\n" + extra + "[models]\ntiny = \"m\"\n";
}

Task CodeTask(int agents) {
  Task task;
  task.id = "t-1";
  task.type = "code_review";
  task.template_id = "code_review.0";
  task.topology = Topology::kChain;
  task.input = "Write a function.";
  for (int a = 0; a < agents; ++a)
    task.agents.push_back({"N" + std::to_string(a), "coder", "", "", {}});
  return task;
}

TEST(PipelineFile, ShippedExamplesLoadAndBindToTheirInputs) {
  struct Example {
    std::string file;
    size_t agents;
    size_t turns_per_task;  // 0: varies
  } examples[] = {
      {"five_agents.toml", 5, 9}, {"planner_coder_reviewer.toml", 3, 3}, {"rag.toml", 1, 1}};
  for (const auto& e : examples) {
    auto spec = LoadPipeline(kRoot + "/examples/" + e.file);
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    EXPECT_EQ(spec->agents.size(), e.agents) << e.file;
    auto templates = LoadTemplates(spec->templates);
    ASSERT_TRUE(templates.ok()) << templates.status().ToString();
    ASSERT_EQ(spec->models.size(), 1u);
    EXPECT_TRUE(std::filesystem::exists(spec->models.begin()->second + "/config.json"));
    size_t bound = 0;
    for (const auto& file : spec->tasks) {
      auto tasks = LoadTasks(file, *templates, 20);
      ASSERT_TRUE(tasks.ok()) << tasks.status().ToString();
      for (Task& task : *tasks) {
        auto b = BindTask(*spec, task, *templates);
        ASSERT_TRUE(b.ok()) << b.status().ToString();
        EXPECT_EQ(Schedule(*b).size(), e.turns_per_task) << task.id;
        ++bound;
      }
    }
    EXPECT_GT(bound, 0u) << e.file;
  }
  // The five agents are fully connected: a second-round reporter reads the three others.
  auto spec = LoadPipeline(kRoot + "/examples/five_agents.toml");
  auto templates = LoadTemplates(spec->templates);
  auto tasks = LoadTasks(spec->tasks[0], *templates, 1);
  auto task = BindTask(*spec, (*tasks)[0], *templates);
  ASSERT_TRUE(task.ok());
  const auto turns = Schedule(*task);
  EXPECT_EQ(turns[4].agent, 0);
  EXPECT_EQ(turns[4].sees, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(turns[8].agent, 4);
  EXPECT_EQ(turns[8].sees, (std::vector<int>{4, 5, 6, 7}));
  // Per-agent settings reach the spec.
  auto chain = LoadPipeline(kRoot + "/examples/planner_coder_reviewer.toml");
  ASSERT_TRUE(chain.ok());
  EXPECT_FLOAT_EQ(chain->agents[1].sampling.temperature, 0.7f);
  EXPECT_EQ(chain->agents[1].sampling.seed, 7u);
  EXPECT_EQ(chain->agents[1].max_reply_tokens, 48);
  EXPECT_EQ(chain->scored, false);
  // Five readers of every input: its first reader stores the input's base after its reply.
  EXPECT_TRUE(spec->bases_after_reply);
  EXPECT_FALSE(chain->bases_after_reply);
}

TEST(PipelineFile, DagRunsEachAgentAfterTheAgentsItSees) {
  const std::string text = Head("topology = \"dag\"\n") +
                           "[[agents]]\nid = \"second-review\"\nrole = \"reviewer\"\n"
                           "sees = [\"code\"]\n"
                           "[[agents]]\nid = \"plan\"\nrole = \"planner\"\n"
                           "[[agents]]\nid = \"code\"\nsees = [\"plan\"]\n"
                           "[[agents]]\nid = \"final\"\nrole = \"reviewer\"\n"
                           "sees = [\"second-review\", \"code\"]\n";
  auto spec = LoadPipeline(WritePipeline("dag.toml", text));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  auto templates = LoadTemplates(spec->templates);
  ASSERT_TRUE(templates.ok());
  auto task = BindTask(*spec, CodeTask(4), *templates);
  ASSERT_TRUE(task.ok()) << task.status().ToString();
  EXPECT_EQ(task->topology, Topology::kDag);
  EXPECT_EQ(task->agents[0].role, "reviewer");
  EXPECT_EQ(task->agents[2].role, "coder");  // no role in the file: the task's
  const auto turns = Schedule(*task);
  ASSERT_EQ(turns.size(), 4u);
  EXPECT_EQ(turns[0].agent, 1);  // plan: the first listed agent that is ready
  EXPECT_EQ(turns[1].agent, 2);  // code, after plan
  EXPECT_EQ(turns[1].sees, (std::vector<int>{0}));
  EXPECT_EQ(turns[2].agent, 0);  // second-review, after code
  EXPECT_EQ(turns[2].sees, (std::vector<int>{1}));
  EXPECT_EQ(turns[3].agent, 3);  // final answers last
  EXPECT_EQ(turns[3].sees, (std::vector<int>{2, 1}));
}

TEST(PipelineFile, BindingChecksAgentsRolesAndScoring) {
  auto spec = LoadPipeline(kRoot + "/examples/planner_coder_reviewer.toml");
  ASSERT_TRUE(spec.ok());
  auto templates = LoadTemplates(spec->templates);
  ASSERT_TRUE(templates.ok());
  auto wrong_count = BindTask(*spec, CodeTask(2), *templates);
  ASSERT_FALSE(wrong_count.ok());
  EXPECT_NE(wrong_count.status().message().find("has 2 agents"), std::string::npos);
  Task scored = CodeTask(3);
  scored.answer = "done";
  auto bound = BindTask(*spec, scored, *templates);
  ASSERT_TRUE(bound.ok());
  EXPECT_FALSE(bound->scored);  // scoring = "none" wins over the task's
  EXPECT_FALSE(IsCorrect(*bound, "done"));
  EXPECT_EQ(bound->agents[0].role, "planner");

  auto true_context = LoadPipeline(WritePipeline(
      "true_context.toml", Head("true_context_anchors = true\n") + "[[agents]]\nid = \"a\"\n"));
  ASSERT_TRUE(true_context.ok()) << true_context.status().ToString();
  EXPECT_TRUE(true_context->true_context_anchors);
  EXPECT_FALSE(spec->true_context_anchors);

  auto unknown_role = LoadPipeline(
      WritePipeline("role.toml", Head() + "[[agents]]\nid = \"a\"\nrole = \"chef\"\n"));
  ASSERT_TRUE(unknown_role.ok());
  auto refused = BindTask(*unknown_role, CodeTask(1), *templates);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("has no role 'chef'"), std::string::npos);
}

TEST(PipelineFile, BrokenFilesAreRefusedWithTheReason) {
  const std::string agent = "[[agents]]\nid = \"a\"\n";
  struct Case {
    std::string text, expect;
  } cases[] = {
      {Head("colour = \"blue\"\n") + agent, "unknown key 'colour'"},
      {Head() + agent + "temprature = 0.5\n", "unknown key 'temprature'"},
      {"templates = \"x\"\ntasks = [\"y\"]\n" + agent, "missing 'name'"},
      {Head("topology = \"star\"\n") + agent, "unknown topology 'star'"},
      {Head("scoring = \"fuzzy\"\n") + agent, "unknown scoring 'fuzzy'"},
      {Head("rounds = 40\n") + agent, "'rounds' = 40 is not in [1, 16]"},
      {Head("bases_after_reply = \"yes\"\n") + agent, "'bases_after_reply' must be true or false"},
      {Head("true_context_anchors = 1\n") + agent, "'true_context_anchors' must be true or false"},
      {Head(), "'[[agents]]' must list 1 to 64 agents"},
      {Head() + agent + agent, "duplicate agent id 'a'"},
      {Head() + agent + "model = \"big\"\n", "model 'big' is not in [models]"},
      {Head() + agent + "model = \"tiny\"\nworker = \"ipc:///tmp/w\"\n", "not both"},
      {Head() + agent + "temperature = -1.0\n", "temperature"},
      {Head() + agent + "max_reply_tokens = 0\n", "'max_reply_tokens' = 0"},
      {Head() + agent + "seed = \"x\"\n", "'seed' must be an integer"},
      {Head() + agent + "sees = [\"b\"]\n", "only topology 'dag' uses"},
      {Head("topology = \"dag\"\n") + agent + "sees = [\"b\"]\n", "unknown agent 'b'"},
      {Head("topology = \"dag\"\n") + agent + "sees = [\"a\"]\n", "sees itself"},
      {Head("topology = \"dag\"\n") + "[[agents]]\nid = \"a\"\nsees = [\"b\"]\n" +
           "[[agents]]\nid = \"b\"\nsees = [\"a\"]\n[[agents]]\nid = \"c\"\n",
       "form a cycle"},
      {Head("topology = \"dag\"\n") + "[[agents]]\nid = \"a\"\nsees = [\"b\"]\n" +
           "[[agents]]\nid = \"b\"\n",
       "the last agent, who answers"},
      {Head("topology = \"single\"\n") + agent + "[[agents]]\nid = \"b\"\n", "exactly one agent"},
      {Head() + "[[agents]\n", "kvcomm_pipeline_spec_bad.toml"},
  };
  for (const auto& c : cases) {
    auto result = LoadPipeline(WritePipeline("bad.toml", c.text));
    ASSERT_FALSE(result.ok()) << c.text;
    EXPECT_NE(result.status().message().find(c.expect), std::string::npos)
        << c.expect << " / " << result.status().message();
  }
}

}  // namespace
}  // namespace kvcomm::pipeline
