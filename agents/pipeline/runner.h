// Runs a task's agents in their scheduled order on one model and scores the final reply.
// This is the `dense` mode (every turn prefilled in full): the reference the reuse modes are
// measured against.
#pragma once

#include <string>
#include <vector>

#include "agents/pipeline/prompt.h"
#include "agents/pipeline/task.h"
#include "agents/runtime/model.h"
#include "agents/runtime/tokenizer.h"

namespace kvcomm::pipeline {

struct RunOptions {
  int64_t max_reply_tokens = 24;  // an agent replies with one short line
};

struct TurnResult {
  int agent = 0;
  std::string reply;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;  // time to first token
  double seconds = 0;          // prefill + decode
};

struct TaskResult {
  std::string task_id;
  std::string type;
  std::vector<TurnResult> turns;
  std::string final_reply;
  bool correct = false;
};

class DenseRunner {
 public:
  DenseRunner(const runtime::Model& model, const runtime::Tokenizer& tokenizer,
              const TemplateSet& templates, RunOptions options = {});
  Result<TaskResult> Run(const Task& task) const;

 private:
  Result<TurnResult> RunTurn(const std::vector<PromptSegment>& prompt, const Task& task) const;

  const runtime::Model& model_;
  const runtime::Tokenizer& tokenizer_;
  const TemplateSet& templates_;
  RunOptions options_;
  int32_t bos_;
};

}  // namespace kvcomm::pipeline
