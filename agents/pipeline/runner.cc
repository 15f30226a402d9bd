#include "agents/pipeline/runner.h"

#include <chrono>

#include "agents/runtime/generate.h"

namespace kvcomm::pipeline {

DenseRunner::DenseRunner(const runtime::Model& model, const runtime::Tokenizer& tokenizer,
                         const TemplateSet& templates, RunOptions options)
    : model_(model),
      tokenizer_(tokenizer),
      templates_(templates),
      options_(options),
      bos_(model.config().bos_token_id >= 0 ? model.config().bos_token_id : tokenizer.bos_id()) {}

Result<TurnResult> DenseRunner::RunTurn(const std::vector<PromptSegment>& segments,
                                        const Task& task) const {
  KVCOMM_ASSIGN_OR_RETURN(auto prompt, TokenizePrompt(tokenizer_, bos_, segments));
  const int64_t needed = static_cast<int64_t>(prompt.tokens.size()) + options_.max_reply_tokens;
  if (needed > model_.config().max_position_embeddings) {
    return InvalidArgument(
        "task '{}': a prompt of {} tokens plus a {}-token reply exceeds the "
        "model's context of {}",
        task.id, prompt.tokens.size(), options_.max_reply_tokens,
        model_.config().max_position_embeddings);
  }
  KVCOMM_ASSIGN_OR_RETURN(auto cache, model_.NewCache(needed));
  runtime::GenerateOptions generate;
  generate.max_new_tokens = options_.max_reply_tokens;
  generate.stop_strings = {"\n"};
  generate.stop_tokens = model_.config().eos_token_ids;
  if (generate.stop_tokens.empty() && tokenizer_.eos_id() >= 0)
    generate.stop_tokens.push_back(tokenizer_.eos_id());
  const auto start = std::chrono::steady_clock::now();
  KVCOMM_ASSIGN_OR_RETURN(auto out,
                          runtime::Generate(model_, &tokenizer_, prompt.tokens, cache, generate));
  TurnResult turn;
  turn.reply = out.text;
  turn.prompt_tokens = out.prompt_tokens;
  turn.prefill_seconds = out.prefill_seconds;
  turn.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return turn;
}

Result<TaskResult> DenseRunner::Run(const Task& task) const {
  auto tmpl = templates_.find(task.template_id);
  if (tmpl == templates_.end())
    return InvalidArgument("task '{}': unknown template '{}'", task.id, task.template_id);
  TaskResult result{task.id, task.type, {}, {}, false};
  for (const Turn& turn : Schedule(task)) {
    std::vector<Message> messages;
    for (int seen : turn.sees)
      messages.push_back({task.agents[result.turns[seen].agent].name, result.turns[seen].reply});
    auto segments = RenderPrompt(tmpl->second, task.agents[turn.agent], task, messages);
    KVCOMM_ASSIGN_OR_RETURN(auto turn_result, RunTurn(segments, task));
    turn_result.agent = turn.agent;
    result.turns.push_back(std::move(turn_result));
  }
  result.final_reply = result.turns.back().reply;
  result.correct = IsCorrect(task, result.final_reply);
  return result;
}

}  // namespace kvcomm::pipeline
