// Runs a task's agents in their scheduled order and scores the final reply. Each agent's turns
// go to its TurnExecutor (in this process or a kvcomm-agent worker) with its sampling settings.
// Reuse modes (segment_reuse.h): a turn whose daemon fetch fails runs dense and is counted as a
// fallback; it never fails the task.
#pragma once

#include <string>
#include <vector>

#include "agents/pipeline/task.h"
#include "agents/pipeline/turn.h"

namespace kvcomm::pipeline {

struct AgentSettings {
  std::string id;  // reported per agent; empty: "<role>.<index>"
  runtime::SamplingOptions sampling;
  int64_t max_reply_tokens = 24;
  TurnExecutor* executor = nullptr;  // must outlive the runner
};

struct TaskResult {
  std::string task_id;
  std::string type;
  std::vector<TurnResult> turns;
  std::vector<std::string> agent_ids;  // per task agent: its AgentSettings::id
  std::string final_reply;
  bool correct = false;
};

class PipelineRunner {
 public:
  // Agent k of a task runs with `per_agent[k]` when given (a pipeline file; every task then has
  // that many agents), otherwise with `defaults`.
  PipelineRunner(const TemplateSet& templates, AgentSettings defaults,
                 std::vector<AgentSettings> per_agent = {});
  Result<TaskResult> Run(const Task& task);

 private:
  const TemplateSet& templates_;
  AgentSettings defaults_;
  std::vector<AgentSettings> per_agent_;
};

}  // namespace kvcomm::pipeline
