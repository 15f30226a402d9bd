// Agent prompts as segments: template pieces and the placeholders that agents share (the user
// input, retrieved documents, other agents' messages). Each segment is tokenized on its own and
// the prompt's tokens are BOS followed by the segments' tokens in order, so a placeholder has the
// same tokens wherever it is placed: the property that lets its KV be reused.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "agents/pipeline/task.h"
#include "agents/runtime/tokenizer.h"

namespace kvcomm::pipeline {

enum class SegmentKind { kText, kInput, kDocument, kMessage };

struct PromptSegment {
  SegmentKind kind = SegmentKind::kText;
  std::string text;
  // Placeholders: what the content is in the pipeline ("input", "document.2", "message.3" for
  // a message of the task's agent 3), the same in every agent's prompt. Empty for text.
  std::string slot;
};

struct Message {
  std::string author;
  std::string text;
  int author_index = 0;  // the author's index among the task's agents
};

// The rendering rules of bench/tasks/templates.toml (header, notes, input, documents, messages,
// instruction + cue); tools/make_tasks.py's render() is the same function.
std::vector<PromptSegment> RenderPrompt(const PromptTemplate& tmpl, const AgentSpec& agent,
                                        const Task& task, const std::vector<Message>& messages);

std::string JoinText(const std::vector<PromptSegment>& segments);

struct TokenizedPrompt {
  std::vector<int32_t> tokens;         // BOS + every segment's tokens
  std::vector<int64_t> segment_begin;  // index in `tokens` where each segment starts
};
Result<TokenizedPrompt> TokenizePrompt(const runtime::Tokenizer& tokenizer, int32_t bos,
                                       const std::vector<PromptSegment>& segments);

}  // namespace kvcomm::pipeline
