#include "agents/pipeline/runner.h"

#include <cassert>

namespace kvcomm::pipeline {

PipelineRunner::PipelineRunner(const TemplateSet& templates, AgentSettings defaults,
                               std::vector<AgentSettings> per_agent)
    : templates_(templates), defaults_(std::move(defaults)), per_agent_(std::move(per_agent)) {
  assert(defaults_.executor != nullptr);
  for ([[maybe_unused]] const auto& a : per_agent_) assert(a.executor != nullptr);
}

Result<TaskResult> PipelineRunner::Run(const Task& task) {
  if (!per_agent_.empty() && per_agent_.size() != task.agents.size())
    return InvalidArgument("task '{}' has {} agents, the pipeline {}", task.id, task.agents.size(),
                           per_agent_.size());
  TaskResult result{task.id, task.type, {}, {}, {}, false};
  for (size_t a = 0; a < task.agents.size(); ++a) {
    const std::string& id = per_agent_.empty() ? defaults_.id : per_agent_[a].id;
    result.agent_ids.push_back(!id.empty() ? id : task.agents[a].role + "." + std::to_string(a));
  }
  const std::vector<Turn> schedule = Schedule(task);
  std::vector<bool> read(schedule.size(), false);  // someone sees this turn's reply
  for (const Turn& turn : schedule)
    for (int seen : turn.sees) read[seen] = true;
  for (const Turn& turn : schedule) {
    const AgentSpec& agent = task.agents[turn.agent];
    const std::string& template_id =
        agent.template_id.empty() ? task.template_id : agent.template_id;
    auto tmpl = templates_.find(template_id);
    if (tmpl == templates_.end())
      return InvalidArgument("task '{}': unknown template '{}'", task.id, template_id);
    if (!tmpl->second.roles.contains(agent.role))
      return InvalidArgument("task '{}': template '{}' has no role '{}'", task.id, template_id,
                             agent.role);
    std::vector<Message> messages;
    for (int seen : turn.sees) {
      const int author = result.turns[seen].agent;
      messages.push_back({task.agents[author].name, result.turns[seen].reply, author});
    }
    const AgentSettings& settings = per_agent_.empty() ? defaults_ : per_agent_[turn.agent];
    TurnRequest request;
    request.task_id = task.id;
    // Slots and anchor deltas are per template: the same agent text surrounds them in every
    // task. Deltas are per role: agents of one role differ only in their name and notes, and
    // sharing their deltas doubled placeholder reuse on the five-agent example at the same
    // accuracy (bench/RESULTS.md).
    request.slot_prefix = template_id + "/";
    request.agent = template_id + "/" + agent.role;
    request.segments = RenderPrompt(tmpl->second, agent, task, messages);
    request.sampling = settings.sampling;
    request.max_reply_tokens = settings.max_reply_tokens;
    request.reply_is_read = read[result.turns.size()];
    KVCOMM_ASSIGN_OR_RETURN(auto turn_result, settings.executor->Run(request));
    turn_result.agent = turn.agent;
    result.turns.push_back(std::move(turn_result));
  }
  result.final_reply = result.turns.back().reply;
  result.correct = IsCorrect(task, result.final_reply);
  return result;
}

}  // namespace kvcomm::pipeline
