// The shipped model on the task suite with our runtime on CPU (dense mode, the first tasks of
// each type): accuracy must reach what models/kvcomm-tiny/accuracy.json states for the whole
// suite, within a tolerance that covers a small sample.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agents/pipeline/runner.h"

namespace kvcomm::pipeline {
namespace {

const std::string kSuite = KVCOMM_SOURCE_DIR "/bench/tasks";
const std::string kModel = KVCOMM_SOURCE_DIR "/models/kvcomm-tiny";

TEST(DenseAccuracy, SampleReachesTheStatedAccuracyOnCpu) {
  std::ifstream in(kModel + "/accuracy.json");
  ASSERT_TRUE(in.good());
  const auto stated = nlohmann::json::parse(in)["dense"]["cpu"];
  auto templates = LoadTemplates(kSuite + "/templates.toml");
  ASSERT_TRUE(templates.ok());
  auto model = runtime::Model::Load(kModel);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto tokenizer = runtime::Tokenizer::Load(kModel + "/tokenizer.model");
  ASSERT_TRUE(tokenizer.ok());
  LocalExecutor executor(**model, **tokenizer);
  AgentSettings settings;
  settings.executor = &executor;
  PipelineRunner runner(*templates, settings);
  // long_context turns are ~1.3k tokens each: fewer of them keep the test quick on 2 cores.
  // Under the sanitizers (several times slower) the sample only has to exercise the code.
#if defined(__SANITIZE_ADDRESS__)
  const std::map<std::string, int> sample = {
      {"fact_relay", 6}, {"aggregation", 6}, {"rag", 6}, {"long_context", 2}};
#else
  const std::map<std::string, int> sample = {
      {"fact_relay", 24}, {"aggregation", 24}, {"rag", 24}, {"long_context", 8}};
#endif
  for (const auto& [type, n] : sample) {
    auto tasks = LoadTasks(kSuite + "/" + type + ".jsonl", *templates, n);
    ASSERT_TRUE(tasks.ok());
    int correct = 0;
    for (const Task& task : *tasks) {
      auto run = runner.Run(task);
      ASSERT_TRUE(run.ok()) << run.status().ToString();
      correct += run->correct;
    }
    const double p = stated[type].get<double>();
    const double accuracy = static_cast<double>(correct) / n;
    // Three binomial standard deviations of an n-task sample, at least one task.
    const double tolerance = std::max(3 * std::sqrt(p * (1 - p) / n), 1.0 / n);
    EXPECT_GE(accuracy, p - tolerance) << type << ": " << correct << "/" << n;
    std::printf("%-14s %d/%d correct (suite: %.1f%%)\n", type.c_str(), correct, n, 100 * p);
  }
}

}  // namespace
}  // namespace kvcomm::pipeline
