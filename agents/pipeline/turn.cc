#include "agents/pipeline/turn.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>

namespace kvcomm::pipeline {
std::vector<int32_t> BasePrefix(const runtime::Tokenizer& tokenizer, int32_t bos) {
  // A label line like the ones that precede placeholders in prompts.
  auto lead = tokenizer.Encode("Text:\n");
  assert(lead.ok());  // a fixed ASCII line always encodes
  std::vector<int32_t> prefix = {bos};
  if (lead.ok()) prefix.insert(prefix.end(), lead->begin(), lead->end());
  return prefix;
}

Status TurnRequest::Validate() const {
  if (agent.empty()) return InvalidArgument("turn of task '{}': no agent name", task_id);
  if (segments.empty()) return InvalidArgument("turn of task '{}': empty prompt", task_id);
  if (max_reply_tokens < 1 || max_reply_tokens > 4096)
    return InvalidArgument("turn of task '{}': max_reply_tokens {} is not in [1, 4096]", task_id,
                           max_reply_tokens);
  for (const PromptSegment& s : segments) {
    if ((s.kind == SegmentKind::kText) != s.slot.empty())
      return InvalidArgument(
          "turn of task '{}': placeholders need a slot and text segments must have none", task_id);
  }
  return sampling.Validate();
}

LocalExecutor::LocalExecutor(const runtime::Model& model, const runtime::Tokenizer& tokenizer,
                             ExecutorOptions options, client::Client* daemon,
                             client::Delivery delivery)
    : model_(model),
      tokenizer_(tokenizer),
      options_(options),
      bos_(model.config().bos_token_id >= 0 ? model.config().bos_token_id : tokenizer.bos_id()) {
  assert(options.mode == Mode::kDense || daemon != nullptr);
  if (options.mode != Mode::kDense) {
    ReuseOptions reuse;
    if (options.mode == Mode::kKvcomm) reuse.base_prefix = BasePrefix(tokenizer, bos_);
    reuse.delivery = delivery;
    reuse.bases_after_reply = options.bases_after_reply;
    reuse.true_context_anchors = options.true_context_anchors;
    reuse_.emplace(*daemon, model,
                   model.device() == runtime::Device::kCpu ? DType::kF32 : DType::kBF16,
                   options.mode, std::move(reuse));
  }
}

Result<TurnResult> LocalExecutor::Run(const TurnRequest& request) {
  KVCOMM_RETURN_IF_ERROR(request.Validate());
  KVCOMM_ASSIGN_OR_RETURN(auto prompt, TokenizePrompt(tokenizer_, bos_, request.segments));
  const int64_t needed = static_cast<int64_t>(prompt.tokens.size()) + request.max_reply_tokens;
  if (needed > model_.config().max_position_embeddings) {
    return InvalidArgument(
        "task '{}': a prompt of {} tokens plus a {}-token reply exceeds the "
        "model's context of {}",
        request.task_id, prompt.tokens.size(), request.max_reply_tokens,
        model_.config().max_position_embeddings);
  }
  KVCOMM_ASSIGN_OR_RETURN(auto cache, model_.NewCache(needed));
  runtime::GenerateOptions generate;
  generate.max_new_tokens = request.max_reply_tokens;
  generate.sampling = request.sampling;
  generate.stop_strings = {"\n"};
  generate.keep_prompt_logits = options_.measure_fidelity;
  generate.stop_tokens = model_.config().eos_token_ids;
  if (generate.stop_tokens.empty() && tokenizer_.eos_id() >= 0)
    generate.stop_tokens.push_back(tokenizer_.eos_id());
  using Clock = std::chrono::steady_clock;
  auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  TurnResult turn;
  turn.prompt_tokens = static_cast<int64_t>(prompt.tokens.size());
  const auto spans = SegmentSpans(prompt, request.segments, request.slot_prefix);
  const std::string& agent_name = request.agent;
  ImportResult imported;
  imported.source.assign(spans.size(), SpanSource::kComputed);
  const auto start = Clock::now();
  if (reuse_) {
    auto result = reuse_->Import(prompt, spans, agent_name, cache);
    if (result.ok()) {
      imported = std::move(*result);
    } else {
      turn.fallback = true;
      turn.daemon_error = result.status().ToString();
      cache.Truncate(0);
    }
  }
  const auto last_run = Gaps(prompt, spans, imported, cache, &generate.gaps_before);
  for (size_t i = 0; i < spans.size(); ++i) {
    // The last prompt token is recomputed for the first reply token.
    const int64_t reused =
        imported.imported(i) ? spans[i].tokens() - (i + 1 == spans.size() ? 1 : 0) : 0;
    turn.reused_tokens += reused;
    if (imported.source[i] == SpanSource::kRealigned) turn.realigned_tokens += reused;
    if (spans[i].placeholder()) {
      turn.placeholder_tokens += spans[i].tokens();
      turn.reused_placeholder_tokens += reused;
    }
  }
  turn.made_anchors = !imported.report.empty();
  turn.recomputed_tokens = imported.recomputed_tokens;
  // Only a turn that used estimated placeholders has something to check.
  std::vector<std::string> realigned_slots;
  if (imported.check_reuse) realigned_slots = RealignedSlots(spans, imported);
  const bool check = !realigned_slots.empty();
  generate.keep_prompt_logits = options_.measure_fidelity || check;
  const double gaps_seconds = seconds_since(start);
  // A checked turn answers with the full prefill's reply, so that one is computed first: the
  // answer's first token does not wait for the reply with reused KV, which only compares.
  Result<runtime::GenerateResult> full = runtime::GenerateResult{};
  if (check) {
    full = FullReply(prompt, generate, needed);
    if (!full.ok()) {
      (void)reuse_->ReleaseLeases(imported);  // the turn fails; its leases go back first
      return full.status();
    }
  }
  auto generated = runtime::Generate(model_, &tokenizer_, last_run, cache, generate);
  // Leases go back once the reply is out (not inside the TTFT), also when generation failed.
  const Status released = reuse_ ? reuse_->ReleaseLeases(imported) : Status();
  KVCOMM_ASSIGN_OR_RETURN(auto out, std::move(generated));
  KVCOMM_RETURN_IF_ERROR(released);
  turn.reply = out.text;
  turn.prefill_seconds = gaps_seconds + (check ? full->prefill_seconds : out.prefill_seconds);
  turn.seconds = seconds_since(start);
  if (check) {
    // Which slot changed the reply, when there is a choice: kvcommd then stops estimating that
    // one (and its family) for this agent, not the others.
    std::vector<std::string> blamed;
    if (full->text != out.text && realigned_slots.size() > 1) {
      generate.keep_prompt_logits = false;
      const auto reply_keeping = [&](std::span<const std::string> kept) {
        return ReplyKeeping(prompt, spans, imported, cache, generate, kept);
      };
      KVCOMM_ASSIGN_OR_RETURN(blamed, BlamedSlots(realigned_slots, full->text, reply_keeping));
    }
    ReportCheck(std::move(realigned_slots), std::move(blamed), agent_name, *full, out, turn);
  }
  if (options_.measure_fidelity && turn.reused_tokens > 0)
    KVCOMM_RETURN_IF_ERROR(
        MeasureFidelity(prompt, spans, imported, cache, out.prompt_logits, turn));
  if (reuse_ && !turn.fallback) {
    const auto store_start = Clock::now();
    Status stored = reuse_->Store(prompt, spans, imported, cache);
    if (stored.ok()) stored = reuse_->Report(prompt, spans, imported, agent_name, cache);
    if (stored.ok() && options_.mode == Mode::kKvcomm && request.reply_is_read) {
      // Tokenized as a reader's prompt holds it: the message segment is the reply's line.
      auto message = tokenizer_.Encode(turn.reply + "\n");
      if (!message.ok()) {
        stored = message.status();
      } else if (!message->empty()) {
        stored = reuse_->StoreBase(*message);
      }
    }
    if (!stored.ok()) {
      turn.store_failed = true;
      turn.daemon_error = stored.ToString();
    }
    turn.store_seconds = seconds_since(store_start);
  }
  return turn;
}

Result<runtime::GenerateResult> LocalExecutor::FullReply(const TokenizedPrompt& prompt,
                                                         runtime::GenerateOptions generate,
                                                         int64_t capacity) const {
  KVCOMM_ASSIGN_OR_RETURN(auto cache, model_.NewCache(capacity));
  generate.gaps_before.clear();
  return runtime::Generate(model_, &tokenizer_, prompt.tokens, cache, generate);
}

Result<std::vector<std::string>> BlamedSlots(const std::vector<std::string>& slots,
                                             const std::string& full_reply,
                                             const KeptSlotsReply& reply_keeping) {
  std::vector<std::string> blamed;
  for (size_t s = 0; s < slots.size(); ++s) {
    KVCOMM_ASSIGN_OR_RETURN(std::string alone, reply_keeping(std::span(slots).subspan(s, 1)));
    std::vector<std::string> others = slots;
    others.erase(others.begin() + static_cast<std::ptrdiff_t>(s));
    KVCOMM_ASSIGN_OR_RETURN(std::string without, reply_keeping(others));
    if (alone != full_reply || without == full_reply) blamed.push_back(slots[s]);
  }
  return blamed;
}

Result<std::string> LocalExecutor::ReplyKeeping(const TokenizedPrompt& prompt,
                                                const std::vector<SegmentSpan>& spans,
                                                const ImportResult& imported,
                                                const runtime::KvCache& reused,
                                                runtime::GenerateOptions generate,
                                                std::span<const std::string> kept) const {
  const DType dtype = reused.NativeDType();
  ImportResult variant;
  variant.source = KeepSlots(spans, imported.source, kept);
  KVCOMM_ASSIGN_OR_RETURN(auto cache, model_.NewCache(reused.capacity()));
  for (size_t i = 0; i < spans.size(); ++i) {
    if (!variant.imported(i)) continue;
    // Whole spans: the last prompt token, if imported, is recomputed again by Gaps.
    KVCOMM_ASSIGN_OR_RETURN(auto kv, reused.Export(spans[i].begin, spans[i].end, dtype));
    KVCOMM_RETURN_IF_ERROR(
        cache.Import(reused.SegmentLayout(spans[i].tokens(), dtype), kv.span(), spans[i].begin));
  }
  generate.gaps_before.clear();
  const auto last_run = Gaps(prompt, spans, variant, cache, &generate.gaps_before);
  KVCOMM_ASSIGN_OR_RETURN(auto reply,
                          runtime::Generate(model_, &tokenizer_, last_run, cache, generate));
  return reply.text;
}

void LocalExecutor::ReportCheck(std::vector<std::string> slots, std::vector<std::string> blamed,
                                const std::string& agent, const runtime::GenerateResult& full,
                                const runtime::GenerateResult& reused, TurnResult& turn) {
  turn.checked = true;
  turn.check_changed = full.text != reused.text;
  // The full prefill's reply is the true one: it is what the turn answers.
  turn.reply = full.text;
  turn.reused_tokens = turn.realigned_tokens = turn.reused_placeholder_tokens = 0;
  const double kl = KlDivergence(full.prompt_logits, reused.prompt_logits);
  const Status reported =
      reuse_->ReportCheck(std::move(slots), std::move(blamed), agent, turn.check_changed, kl);
  if (!reported.ok()) {
    turn.store_failed = true;
    turn.daemon_error = reported.ToString();
  }
}

std::span<const int32_t> LocalExecutor::Gaps(const TokenizedPrompt& prompt,
                                             const std::vector<SegmentSpan>& spans,
                                             const ImportResult& imported, runtime::KvCache& cache,
                                             std::vector<runtime::Model::TokenRun>* gaps) const {
  std::span<const int32_t> tokens(prompt.tokens);
  const int64_t total = static_cast<int64_t>(tokens.size());
  std::vector<std::pair<int64_t, int64_t>> runs;  // [begin, end) of spans to compute
  for (size_t i = 0; i < spans.size();) {
    if (imported.imported(i)) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < spans.size() && !imported.imported(j)) ++j;
    runs.emplace_back(spans[i].begin, spans[j - 1].end);
    i = j;
  }
  // The reply's first token needs the last prompt token's logits: recompute that token.
  if (imported.imported(spans.size() - 1)) {
    cache.Truncate(total - 1);
    runs.emplace_back(total - 1, total);
  }
  for (size_t r = 0; r + 1 < runs.size(); ++r)
    gaps->push_back({tokens.subspan(runs[r].first, runs[r].second - runs[r].first), runs[r].first});
  return tokens.subspan(runs.back().first, runs.back().second - runs.back().first);
}

Status LocalExecutor::MeasureFidelity(const TokenizedPrompt& prompt,
                                      const std::vector<SegmentSpan>& spans,
                                      const ImportResult& imported, const runtime::KvCache& cache,
                                      const std::vector<float>& logits, TurnResult& turn) const {
  KVCOMM_ASSIGN_OR_RETURN(auto dense_cache, model_.NewCache(cache.capacity()));
  KVCOMM_ASSIGN_OR_RETURN(auto dense_logits, model_.Forward(prompt.tokens, dense_cache));
  turn.next_token_kl = KlDivergence(dense_logits, logits);
  double error = 0, norm = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    if (!imported.imported(i)) continue;
    // The last prompt token is recomputed for the reply, so it is not compared.
    const int64_t end = std::min(spans[i].end, static_cast<int64_t>(prompt.tokens.size()) - 1);
    if (end <= spans[i].begin) continue;
    KVCOMM_ASSIGN_OR_RETURN(auto reused, cache.Export(spans[i].begin, end, DType::kF32));
    KVCOMM_ASSIGN_OR_RETURN(auto dense, dense_cache.Export(spans[i].begin, end, DType::kF32));
    const float* a = reinterpret_cast<const float*>(reused.data());
    const float* b = reinterpret_cast<const float*>(dense.data());
    for (size_t k = 0; k < reused.size() / sizeof(float); ++k) {
      error += (double{a[k]} - b[k]) * (double{a[k]} - b[k]);
      norm += double{b[k]} * b[k];
    }
  }
  turn.kv_relative_error = norm > 0 ? std::sqrt(error / norm) : 0;
  return Status();
}

double KlDivergence(std::span<const float> reference_logits, std::span<const float> logits) {
  assert(reference_logits.size() == logits.size());
  auto log_softmax = [](std::span<const float> x) {
    const double top = *std::max_element(x.begin(), x.end());
    double sum = 0;
    for (float v : x) sum += std::exp(v - top);
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] - top - std::log(sum);
    return out;
  };
  const auto p = log_softmax(reference_logits), q = log_softmax(logits);
  double kl = 0;
  for (size_t i = 0; i < p.size(); ++i) kl += std::exp(p[i]) * (p[i] - q[i]);
  return std::max(kl, 0.0);
}

}  // namespace kvcomm::pipeline
