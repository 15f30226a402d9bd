// One agent turn: a rendered prompt in, a reply and its measurements out. A TurnExecutor runs
// turns; LocalExecutor runs them on a model in this process (reusing KV through kvcommd in the
// reuse modes), RemoteExecutor (remote_executor.h) sends them to a kvcomm-agent worker.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "agents/pipeline/prompt.h"
#include "agents/pipeline/segment_reuse.h"
#include "agents/runtime/generate.h"
#include "agents/runtime/model.h"
#include "agents/runtime/tokenizer.h"

namespace kvcomm::pipeline {

struct TurnRequest {
  std::string task_id;      // for error messages
  std::string agent;        // what kvcommd keys this agent's anchor deltas by
  std::string slot_prefix;  // prepended to the placeholders' slots (pools are per template)
  std::vector<PromptSegment> segments;
  runtime::SamplingOptions sampling;
  int64_t max_reply_tokens = 24;  // an agent replies with one line
  // Another agent will read the reply as a message: kvcomm stores its base KV right away.
  bool reply_is_read = false;
  Status Validate() const;
};

struct TurnResult {
  int agent = 0;  // the task's agent index (set by the runner)
  std::string reply;
  int64_t prompt_tokens = 0;
  int64_t reused_tokens = 0;              // imported from kvcommd instead of computed
  int64_t realigned_tokens = 0;           // of those, realigned (not exact)
  int64_t placeholder_tokens = 0;         // input, documents, messages
  int64_t reused_placeholder_tokens = 0;  // of those, imported
  bool made_anchors = false;      // kvcomm: the turn prefilled and reported placeholders' KV
  int64_t recomputed_tokens = 0;  // kvcomm: ImportResult::recomputed_tokens
  // kvcomm: kvcommd asked for a check, so the turn was computed in full as well; its reply is
  // the full prefill's (the reuse counts above are then 0: nothing reused reached the reply).
  bool checked = false;
  bool check_changed = false;  // the reply with reused KV differed from the full one
  bool fallback = false;       // fetching from the daemon failed: the turn ran dense
  bool store_failed = false;   // storing (or reporting) the turn's KV in the daemon failed
  std::string daemon_error;    // why, for either
  double prefill_seconds = 0;  // time to first token: fetching reused KV + prefill
  double seconds = 0;          // prefill + decode
  double store_seconds = 0;    // storing the computed segments afterwards
  // With measure_fidelity, on turns that imported KV (else -1): KL(dense || reuse) of the
  // first reply token's distribution, and ||KV_reuse - KV_dense|| / ||KV_dense|| over the
  // imported tokens, all layers.
  double next_token_kl = -1;
  double kv_relative_error = -1;
};

class TurnExecutor {
 public:
  virtual ~TurnExecutor() = default;
  virtual Result<TurnResult> Run(const TurnRequest& request) = 0;
};

struct ExecutorOptions {
  Mode mode = Mode::kDense;
  // Reuse modes: also prefill each turn in full and compare (costs a dense prefill per turn).
  bool measure_fidelity = false;
  // kvcomm: new content's base is stored, and its KV offered, after the reply
  // (ReuseOptions::bases_after_reply).
  bool bases_after_reply = false;
  // kvcomm: anchor-making turns compute what precedes what they report in its true context
  // (ReuseOptions::true_context_anchors).
  bool true_context_anchors = false;
};

// What kvcomm computes a placeholder's base KV after: BOS and a short neutral lead-in line, so
// the placeholder's first token is not the one right after BOS (whose KV is unlike any other).
std::vector<int32_t> BasePrefix(const runtime::Tokenizer& tokenizer, int32_t bos);

// Of `slots`, the ones a checked turn's changed reply is blamed on: those whose estimates change
// it alone, and those whose estimates the change needs (without them the reply is
// `full_reply`). `reply_keeping(kept)` is the turn's reply with only the `kept` slots' estimates.
// Empty when no slot is either: then the slots share the change.
using KeptSlotsReply = std::function<Result<std::string>(std::span<const std::string> kept)>;
Result<std::vector<std::string>> BlamedSlots(const std::vector<std::string>& slots,
                                             const std::string& full_reply,
                                             const KeptSlotsReply& reply_keeping);

// KL(P || Q) in nats between the distributions softmax(reference_logits) and softmax(logits).
double KlDivergence(std::span<const float> reference_logits, std::span<const float> logits);

class LocalExecutor final : public TurnExecutor {
 public:
  // `daemon` is needed by the reuse modes; model, tokenizer and daemon must outlive this.
  // `delivery`: how kvcomm plans bring KV (kDeviceIpc: a CUDA model on kvcommd's GPU).
  LocalExecutor(const runtime::Model& model, const runtime::Tokenizer& tokenizer,
                ExecutorOptions options = {}, client::Client* daemon = nullptr,
                client::Delivery delivery = client::Delivery::kFrames);
  Result<TurnResult> Run(const TurnRequest& request) override;

 private:
  // Fills next_token_kl and kv_relative_error of `turn` against a full prefill of `prompt`.
  Status MeasureFidelity(const TokenizedPrompt& prompt, const std::vector<SegmentSpan>& spans,
                         const ImportResult& imported, const runtime::KvCache& cache,
                         const std::vector<float>& logits, TurnResult& turn) const;
  // The turn computed in full, in a cache of `capacity` tokens.
  Result<runtime::GenerateResult> FullReply(const TokenizedPrompt& prompt,
                                            runtime::GenerateOptions generate,
                                            int64_t capacity) const;
  // A checked turn (kvcommd asked; `full` is the turn computed in full): answers with the full
  // reply and reports for `slots` (those it used realigned KV for) whether the reply with
  // reused KV differed, and which of them changed it alone.
  void ReportCheck(std::vector<std::string> slots, std::vector<std::string> blamed,
                   const std::string& agent, const runtime::GenerateResult& full,
                   const runtime::GenerateResult& reused, TurnResult& turn);
  // The reply of the prompt with only the `kept` slots' realigned KV (from `reused`; the rest
  // of the prompt computed but exact spans).
  Result<std::string> ReplyKeeping(const TokenizedPrompt& prompt,
                                   const std::vector<SegmentSpan>& spans,
                                   const ImportResult& imported, const runtime::KvCache& reused,
                                   runtime::GenerateOptions generate,
                                   std::span<const std::string> kept) const;
  // The spans not imported, as runs: all but the last go to `gaps` (computed with the last in
  // one pass); returns the tokens of that last run (what generation starts from).
  std::span<const int32_t> Gaps(const TokenizedPrompt& prompt,
                                const std::vector<SegmentSpan>& spans, const ImportResult& imported,
                                runtime::KvCache& cache,
                                std::vector<runtime::Model::TokenRun>* gaps) const;

  const runtime::Model& model_;
  const runtime::Tokenizer& tokenizer_;
  ExecutorOptions options_;
  int32_t bos_;
  std::optional<SegmentReuse> reuse_;
};

}  // namespace kvcomm::pipeline
