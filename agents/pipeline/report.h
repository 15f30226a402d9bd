// Totals of a pipeline run, per task type, per agent and overall: accuracy, reuse, time to first
// token, fidelity. kvcomm-pipeline prints them and writes them as JSON.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "agents/pipeline/runner.h"

namespace kvcomm::pipeline {

struct Totals {
  int64_t tasks = 0, scored = 0, correct = 0, turns = 0;
  int64_t prompt_tokens = 0, reused_tokens = 0, realigned_tokens = 0;
  int64_t placeholder_tokens = 0, reused_placeholder_tokens = 0;
  int64_t anchor_turns = 0, fallbacks = 0;
  int64_t checked_turns = 0, checks_changed = 0;  // kvcomm: turns kvcommd had computed in full
  int64_t measured = 0;  // turns with fidelity numbers
  double prefill_seconds = 0, seconds = 0, kl = 0, kv_error = 0;

  void AddTurn(const TurnResult& turn);
  void AddTask(const TaskResult& task, bool scored);
  double accuracy() const { return scored ? static_cast<double>(correct) / scored : 0.0; }
  double reuse_rate() const { return Ratio(reused_tokens, prompt_tokens); }
  double realigned_rate() const { return Ratio(realigned_tokens, prompt_tokens); }
  double placeholder_reuse_rate() const {
    return Ratio(reused_placeholder_tokens, placeholder_tokens);
  }
  double mean_ttft_ms() const { return turns ? 1e3 * prefill_seconds / turns : 0.0; }
  double mean_kl() const { return measured ? kl / measured : 0.0; }
  double mean_kv_error() const { return measured ? kv_error / measured : 0.0; }

 private:
  static double Ratio(int64_t a, int64_t b) { return b ? static_cast<double>(a) / b : 0.0; }
};

struct RunReport {
  std::string mode;
  Totals all;
  std::map<std::string, Totals> by_type;
  std::vector<std::pair<std::string, Totals>> by_agent;  // in order of first appearance
  std::vector<TaskResult> tasks;
  std::vector<bool> scored;  // per task

  void Add(TaskResult task, bool task_scored);
};

}  // namespace kvcomm::pipeline
