// The agent side of reuse through kvcommd. Every segment a turn computes is stored under its
// context key (hash of everything before it + its tokens; the daemon also indexes its content).
// Before prefilling, a turn imports what it can:
//   prefix: the longest run of leading segments stored with the very same preceding tokens
//           (exact: same tokens, same positions, same context);
//   naive:  that, plus any placeholder (input, document, message) whose content was computed
//           anywhere before, its keys re-rotated from where it was computed to where it sits
//           now (positional realignment only; its context stays the one it was computed in).
// The turn then computes the segments that were not imported, in order, over the imported KV.
#pragma once

#include <string>
#include <vector>

#include "agents/client/client.h"
#include "agents/pipeline/prompt.h"
#include "agents/runtime/kv_cache.h"

namespace kvcomm::pipeline {

enum class Mode { kDense, kPrefix, kNaive };
Result<Mode> ParseMode(std::string_view name);
std::string_view ModeName(Mode mode);

// Token range of one prompt segment; the first one includes BOS.
struct SegmentSpan {
  int64_t begin = 0, end = 0;
  SegmentKind kind = SegmentKind::kText;
  int64_t tokens() const { return end - begin; }
};
std::vector<SegmentSpan> SegmentSpans(const TokenizedPrompt& prompt,
                                      const std::vector<PromptSegment>& segments);

class SegmentReuse {
 public:
  // `dtype`: what segments travel and rest as (F32 keeps CPU reuse exact; BF16 for CUDA).
  SegmentReuse(client::Client& client, const runtime::ModelConfig& config, ModelFingerprint model,
               DType dtype, Mode mode);

  // Imports reusable segments into an empty `cache`; returns, per span, whether it was.
  Result<std::vector<bool>> Import(const TokenizedPrompt& prompt,
                                   const std::vector<SegmentSpan>& spans, runtime::KvCache& cache);
  // Stores the spans that were not imported, read from `cache` (which holds the whole prompt).
  Status Store(const TokenizedPrompt& prompt, const std::vector<SegmentSpan>& spans,
               const std::vector<bool>& imported, const runtime::KvCache& cache);

 private:
  SegmentKey ContextKey(const TokenizedPrompt& prompt, const SegmentSpan& span) const;
  // Gets a segment and checks it covers `span`'s token count.
  Result<client::SegmentData> Fetch(const SegmentKey& key, client::KeyKind kind,
                                    const SegmentSpan& span);
  // A placeholder computed elsewhere, re-rotated to `span`'s positions; false if none stored.
  Result<bool> ImportRealigned(const TokenizedPrompt& prompt, const SegmentSpan& span,
                               runtime::KvCache& cache);

  client::Client& client_;
  ModelFingerprint model_;
  DType dtype_;
  Mode mode_;
  std::vector<float> inv_freq_;
};

}  // namespace kvcomm::pipeline
