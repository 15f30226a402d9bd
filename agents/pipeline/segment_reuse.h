// The agent side of reuse through kvcommd. Every segment a turn computes in its true context is
// stored under its context key (hash of everything before it + its tokens; the daemon also
// indexes its content). Before prefilling, a turn imports what it can:
//   prefix: the longest run of leading segments stored with the very same preceding tokens
//           (exact: same tokens, same positions, same context);
//   naive:  that, plus any placeholder (input, document, message) whose content was computed
//           anywhere before, its keys re-rotated from where it was computed to where it sits
//           now (positional realignment only; its context stays the one it was computed in);
//   kvcomm: kvcommd plans the prompt (../shared/KVCOMM.md): exact segments, placeholders and
//           the template segments after them realigned from the placeholder's base KV plus
//           the anchors' deltas, and prefill for the rest. The agent stores the bases (a
//           placeholder's KV right after BOS) and, when the plan asks, reports the KV it
//           computed for the asked-for spans so the placeholder becomes an anchor (over the
//           realigned spans before them, or, with true_context_anchors, after computing
//           everything before them in its true context).
// The turn then computes the segments that were not imported, in order, over the imported KV.
#pragma once

#include <string>
#include <unordered_set>
#include <vector>

#include "agents/client/client.h"
#include "agents/pipeline/prompt.h"
#include "agents/runtime/kv_cache.h"
#include "agents/runtime/model.h"

namespace kvcomm::pipeline {

enum class Mode { kDense, kPrefix, kNaive, kKvcomm };
Result<Mode> ParseMode(std::string_view name);
std::string_view ModeName(Mode mode);

// Token range of one prompt segment; the first one includes BOS.
struct SegmentSpan {
  int64_t begin = 0, end = 0;
  SegmentKind kind = SegmentKind::kText;
  std::string slot;  // placeholders: the segment's slot, prefixed by `slot_prefix`
  int64_t tokens() const { return end - begin; }
  bool placeholder() const { return kind != SegmentKind::kText; }
};
std::vector<SegmentSpan> SegmentSpans(const TokenizedPrompt& prompt,
                                      const std::vector<PromptSegment>& segments,
                                      const std::string& slot_prefix = "");

enum class SpanSource { kComputed, kExact, kRealigned };

struct ImportResult {
  std::vector<SpanSource> source;  // per span
  std::vector<size_t> report;      // kvcomm: placeholder spans whose actual KV is asked for
  // kvcomm with true_context_anchors: realigned tokens set aside to compute them in their true
  // context before a report.
  int64_t recomputed_tokens = 0;
  // kvcomm: kvcommd asks for the turn to be computed in full as well (ReportCheck).
  bool check_reuse = false;
  // kvcomm with device delivery: leases still held (ReleaseLeases gives them back).
  std::vector<uint64_t> leases;
  // kvcomm with bases_after_reply: placeholder spans whose base Store computes and stores.
  std::vector<size_t> later_bases;
  // kvcomm: where the import's time went (seconds): computing and storing missing bases, the
  // plan round trip (kvcommd's realignment included), copying KV into the cache.
  double bases_seconds = 0, plan_seconds = 0, copy_seconds = 0;
  bool imported(size_t span) const { return source[span] != SpanSource::kComputed; }
};

// The spans an anchor-making turn with ReuseOptions::true_context_anchors computes in their true
// context: every span before the end of the last one it reports (a reported placeholder's
// template span after it is reported too).
size_t TrueContextEnd(const std::vector<size_t>& reported, const std::vector<SegmentSpan>& spans);
// The reports (span indices) an anchor-making turn makes: the first of `reported`, in prompt
// order, as long as the realigned spans they make it compute (`realigned`, per span) are at
// most 4x the tokens they report (placeholders and the template spans after them).
std::vector<size_t> ReportsWorthTheirCost(std::vector<size_t> reported,
                                          const std::vector<SegmentSpan>& spans,
                                          const std::vector<bool>& realigned);

// The slots of the placeholders an import realigned (each once, in prompt order).
std::vector<std::string> RealignedSlots(const std::vector<SegmentSpan>& spans,
                                        const ImportResult& imported);
// An import's `source` with the realigned KV of `kept` slots only (their placeholders and the
// template spans after them) beside the exact spans: the rest is to be computed.
std::vector<SpanSource> KeepSlots(const std::vector<SegmentSpan>& spans,
                                  const std::vector<SpanSource>& source,
                                  std::span<const std::string> kept);

struct ReuseOptions {
  // kvcomm computes a placeholder's base KV right after these tokens (BOS and a short neutral
  // lead-in, so the placeholder's first token is not the one right after BOS, whose KV is
  // unlike that of any token in context).
  std::vector<int32_t> base_prefix;
  // How KV moves to and from kvcommd (kDeviceIpc: a CUDA model on kvcommd's GPU, bf16; plans
  // are read and segments put through its arena).
  client::Delivery delivery = client::Delivery::kFrames;
  // kvcomm: a placeholder whose base kvcommd lacks is computed in this turn's prompt, and its
  // base after the reply (in Store) instead of before the plan. The first reader of new
  // content then pays no extra pass inside its time to first token; it offers its KV of the
  // content after the reply (Report), which kvcommd keeps if the content becomes an anchor.
  bool bases_after_reply = false;
  // kvcomm: where an anchor-making turn computes what precedes the content it reports. false:
  // it imports the realigned spans before it and reports the KV it computed over them, so the
  // anchor's deltas carry those estimates' error but the turn recomputes nothing it was handed.
  // true (KVCOMM's way): it computes every non-exact span up to the last one it reports in its
  // true context, and skips reports that would recompute over 4x their tokens
  // (ReportsWorthTheirCost). On the task suite false served 79% of fact relay's placeholder
  // tokens instead of 65% (bench/RESULTS.md).
  bool true_context_anchors = false;
};

class SegmentReuse {
 public:
  // `dtype`: what segments travel and rest as (F32 keeps CPU reuse exact; BF16 for CUDA).
  SegmentReuse(client::Client& client, const runtime::Model& model, DType dtype, Mode mode,
               ReuseOptions options = {});

  // Imports reusable segments into an empty `cache`. `agent` names the agent (kvcomm records
  // anchor deltas per agent).
  Result<ImportResult> Import(const TokenizedPrompt& prompt, const std::vector<SegmentSpan>& spans,
                              const std::string& agent, runtime::KvCache& cache);
  // Gives back the device leases of an import, once its KV is no longer needed from kvcommd
  // (it was copied into the cache during Import; releasing can wait until after the first
  // token). kDeadlineExceeded if one expired first: its KV may have been overwritten while it
  // was copied.
  Status ReleaseLeases(ImportResult& imported);
  // Stores the computed spans that saw only exact KV before them, read from `cache` (which
  // holds the whole prompt). A span computed after realigned KV is not stored: its KV is
  // not the one of its context. Then the bases left for after the reply.
  Status Store(const TokenizedPrompt& prompt, const std::vector<SegmentSpan>& spans,
               const ImportResult& imported, const runtime::KvCache& cache);
  // kvcomm: stores base(content) (its KV right after the base prefix) unless kvcommd holds it:
  // an agent does this for its own reply, which other agents read as a message, so that no
  // reader has to compute it inside its time to first token.
  Status StoreBase(std::span<const int32_t> content);
  // kvcomm: sends the actual KV of the spans the plan asked about (and of the template span
  // after each), and offers that of new content whose base Store stored after the reply
  // (bases_after_reply; kvcommd keeps it if the content becomes an anchor; with
  // true_context_anchors only if nothing realigned came before it).
  Status Report(const TokenizedPrompt& prompt, const std::vector<SegmentSpan>& spans,
                const ImportResult& imported, const std::string& agent,
                const runtime::KvCache& cache);
  // kvcomm: the outcome of the check a plan asked for; `slots`: the turn's RealignedSlots,
  // `blamed`: those of them that changed the reply alone.
  Status ReportCheck(std::vector<std::string> slots, std::vector<std::string> blamed,
                     const std::string& agent, bool reply_changed, double next_token_kl);

 private:
  SegmentKey ContextKey(const TokenizedPrompt& prompt, const SegmentSpan& span) const;
  // Gets a segment and checks it covers `span`'s token count.
  Result<client::SegmentData> Fetch(const SegmentKey& key, client::KeyKind kind,
                                    const SegmentSpan& span);
  // A placeholder computed elsewhere, re-rotated to `span`'s positions; false if none stored.
  Result<bool> ImportRealigned(const TokenizedPrompt& prompt, const SegmentSpan& span,
                               runtime::KvCache& cache);
  Result<ImportResult> ImportPlanned(const TokenizedPrompt& prompt,
                                     const std::vector<SegmentSpan>& spans,
                                     const std::string& agent, runtime::KvCache& cache);
  // Stores base(P) (P's KV right after the base prefix) of placeholders that lack one, or
  // (bases_after_reply) lists them in `later`. Remembers which bases kvcommd holds, so later
  // turns skip asking; a placeholder planned PREFILL without a report means its base is gone
  // (forgotten: stored again next time).
  Status EnsureBases(const TokenizedPrompt& prompt, const std::vector<SegmentSpan>& spans,
                     std::vector<size_t>& later);
  SegmentKey BaseKey(std::span<const int32_t> content) const;
  Status PutBase(std::span<const int32_t> content, SegmentKind kind);
  client::ReuseModel ReuseModel() const;
  Status PutSpan(const TokenizedPrompt& prompt, const SegmentSpan& span,
                 const runtime::KvCache& cache);
  Status ReportSpan(const TokenizedPrompt& prompt, const std::vector<SegmentSpan>& spans, size_t i,
                    const std::string& agent, const runtime::KvCache& cache, bool offered);

  client::Client& client_;
  const runtime::Model& model_;
  DType dtype_;
  Mode mode_;
  std::vector<float> inv_freq_;
  ReuseOptions options_;
  std::unordered_set<SegmentKey, Hash128Hasher> stored_bases_;
};

}  // namespace kvcomm::pipeline
