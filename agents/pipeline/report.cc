#include "agents/pipeline/report.h"

#include <algorithm>

namespace kvcomm::pipeline {

void Totals::AddTurn(const TurnResult& turn) {
  turns += 1;
  prompt_tokens += turn.prompt_tokens;
  reused_tokens += turn.reused_tokens;
  realigned_tokens += turn.realigned_tokens;
  placeholder_tokens += turn.placeholder_tokens;
  reused_placeholder_tokens += turn.reused_placeholder_tokens;
  anchor_turns += turn.made_anchors;
  fallbacks += turn.fallback;
  checked_turns += turn.checked;
  checks_changed += turn.check_changed;
  prefill_seconds += turn.prefill_seconds;
  seconds += turn.seconds;
  if (turn.next_token_kl >= 0) {
    measured += 1;
    kl += turn.next_token_kl;
    kv_error += turn.kv_relative_error;
  }
}

void Totals::AddTask(const TaskResult& task, bool task_scored) {
  tasks += 1;
  scored += task_scored;
  correct += task_scored && task.correct;
  for (const auto& turn : task.turns) AddTurn(turn);
}

void RunReport::Add(TaskResult task, bool task_scored) {
  all.AddTask(task, task_scored);
  by_type[task.type].AddTask(task, task_scored);
  for (const auto& turn : task.turns) {
    const std::string& id = task.agent_ids[turn.agent];
    auto it = std::find_if(by_agent.begin(), by_agent.end(),
                           [&](const auto& entry) { return entry.first == id; });
    if (it == by_agent.end()) it = by_agent.insert(by_agent.end(), {id, Totals{}});
    it->second.AddTurn(turn);
  }
  tasks.push_back(std::move(task));
  scored.push_back(task_scored);
}

}  // namespace kvcomm::pipeline
