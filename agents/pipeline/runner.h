// Runs a task's agents in their scheduled order on one model and scores the final reply.
// Modes (segment_reuse.h): `dense` prefills every turn in full (the reference the reuse modes
// are measured against); `prefix` and `naive` import what kvcommd holds and store what they
// computed. A turn whose daemon fetch fails runs dense and is counted as a fallback; it never
// fails the task.
#pragma once

#include <string>
#include <vector>

#include "agents/pipeline/prompt.h"
#include "agents/pipeline/segment_reuse.h"
#include "agents/pipeline/task.h"
#include "agents/runtime/model.h"
#include "agents/runtime/tokenizer.h"

namespace kvcomm::pipeline {

struct RunOptions {
  int64_t max_reply_tokens = 24;  // an agent replies with one short line
  Mode mode = Mode::kDense;
  // Reuse modes: also prefill each turn in full and compare (costs a dense prefill per turn).
  bool measure_fidelity = false;
};

struct TurnResult {
  int agent = 0;
  std::string reply;
  int64_t prompt_tokens = 0;
  int64_t reused_tokens = 0;              // imported from kvcommd instead of computed
  int64_t realigned_tokens = 0;           // of those, realigned (not exact)
  int64_t placeholder_tokens = 0;         // input, documents, messages
  int64_t reused_placeholder_tokens = 0;  // of those, imported
  bool made_anchors = false;   // kvcomm: the turn prefilled and reported placeholders' KV
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

struct TaskResult {
  std::string task_id;
  std::string type;
  std::vector<TurnResult> turns;
  std::string final_reply;
  bool correct = false;
};

// KL(P || Q) in nats between the distributions softmax(reference_logits) and softmax(logits).
double KlDivergence(std::span<const float> reference_logits, std::span<const float> logits);

class PipelineRunner {
 public:
  // `daemon` is needed by the reuse modes (and must outlive the runner).
  PipelineRunner(const runtime::Model& model, const runtime::Tokenizer& tokenizer,
                 const TemplateSet& templates, RunOptions options = {},
                 client::Client* daemon = nullptr);
  Result<TaskResult> Run(const Task& task);

 private:
  // `agent` is the task's agent index.
  Result<TurnResult> RunTurn(const std::vector<PromptSegment>& prompt, const Task& task, int agent);
  // Fills next_token_kl and kv_relative_error of `turn` against a full prefill of `prompt`.
  Status MeasureFidelity(const TokenizedPrompt& prompt, const std::vector<SegmentSpan>& spans,
                         const ImportResult& imported, const runtime::KvCache& cache,
                         const std::vector<float>& logits, TurnResult& turn) const;
  // Computes the spans not imported, in order, all but the last run of them; returns the
  // tokens of that last run (what generation starts from).
  Result<std::span<const int32_t>> ComputeGaps(const TokenizedPrompt& prompt,
                                               const std::vector<SegmentSpan>& spans,
                                               const ImportResult& imported,
                                               runtime::KvCache& cache) const;

  const runtime::Model& model_;
  const runtime::Tokenizer& tokenizer_;
  const TemplateSet& templates_;
  RunOptions options_;
  int32_t bos_;
  std::optional<SegmentReuse> reuse_;
};

}  // namespace kvcomm::pipeline
