#include "agents/pipeline/prompt.h"

namespace kvcomm::pipeline {
namespace {

std::string Substitute(std::string text, std::string_view field, std::string_view value) {
  for (size_t at = text.find(field); at != std::string::npos;
       at = text.find(field, at + value.size())) {
    text.replace(at, field.size(), value);
  }
  return text;
}

}  // namespace

std::vector<PromptSegment> RenderPrompt(const PromptTemplate& tmpl, const AgentSpec& agent,
                                        const Task& task, const std::vector<Message>& messages) {
  const RoleText& role = tmpl.roles.at(agent.role);  // ParseTask checked the role exists
  std::vector<PromptSegment> segments;
  auto text = [&](std::string s) { segments.push_back({SegmentKind::kText, std::move(s), ""}); };
  text(Substitute(role.header, "{name}", agent.name));
  if (!agent.notes.empty()) text(tmpl.notes + agent.notes + "\n");
  text(tmpl.input);
  segments.push_back({SegmentKind::kInput, task.input + "\n", "input"});
  for (size_t i = 0; i < task.documents.size(); ++i) {
    text(Substitute(tmpl.document, "{index}", std::to_string(i + 1)));
    segments.push_back(
        {SegmentKind::kDocument, task.documents[i] + "\n", "document." + std::to_string(i + 1)});
  }
  for (const Message& m : messages) {
    text(Substitute(tmpl.message, "{name}", m.author));
    segments.push_back(
        {SegmentKind::kMessage, m.text + "\n", "message." + std::to_string(m.author_index)});
  }
  text(role.instruction + tmpl.cue);
  return segments;
}

std::string JoinText(const std::vector<PromptSegment>& segments) {
  std::string out;
  for (const auto& s : segments) out += s.text;
  return out;
}

Result<TokenizedPrompt> TokenizePrompt(const runtime::Tokenizer& tokenizer, int32_t bos,
                                       const std::vector<PromptSegment>& segments) {
  TokenizedPrompt prompt;
  if (bos >= 0) prompt.tokens.push_back(bos);
  for (const auto& segment : segments) {
    prompt.segment_begin.push_back(static_cast<int64_t>(prompt.tokens.size()));
    KVCOMM_ASSIGN_OR_RETURN(auto ids, tokenizer.Encode(segment.text));
    prompt.tokens.insert(prompt.tokens.end(), ids.begin(), ids.end());
  }
  return prompt;
}

}  // namespace kvcomm::pipeline
