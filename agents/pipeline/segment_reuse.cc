#include "agents/pipeline/segment_reuse.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <numeric>

#include "kernels/ops.h"
#include "kernels/realign.h"

namespace kvcomm::pipeline {

Result<Mode> ParseMode(std::string_view name) {
  if (name == "dense") return Mode::kDense;
  if (name == "prefix") return Mode::kPrefix;
  if (name == "naive") return Mode::kNaive;
  if (name == "kvcomm") return Mode::kKvcomm;
  return InvalidArgument("unknown mode '{}' (dense, prefix, naive or kvcomm)", name);
}

std::string_view ModeName(Mode mode) {
  switch (mode) {
    case Mode::kDense:
      return "dense";
    case Mode::kPrefix:
      return "prefix";
    case Mode::kNaive:
      return "naive";
    case Mode::kKvcomm:
      return "kvcomm";
  }
  return "?";
}

std::vector<SegmentSpan> SegmentSpans(const TokenizedPrompt& prompt,
                                      const std::vector<PromptSegment>& segments,
                                      const std::string& slot_prefix) {
  std::vector<SegmentSpan> spans;
  const auto& begins = prompt.segment_begin;
  for (size_t i = 0; i < begins.size(); ++i) {
    const int64_t begin = i == 0 ? 0 : begins[i];
    const int64_t end =
        i + 1 < begins.size() ? begins[i + 1] : static_cast<int64_t>(prompt.tokens.size());
    if (end <= begin) continue;
    const auto& segment = segments[i];
    spans.push_back({begin, end, segment.kind,
                     segment.kind == SegmentKind::kText ? "" : slot_prefix + segment.slot});
  }
  return spans;
}

SegmentReuse::SegmentReuse(client::Client& client, const runtime::Model& model, DType dtype,
                           Mode mode, ReuseOptions options)
    : client_(client),
      model_(model),
      dtype_(dtype),
      mode_(mode),
      inv_freq_(model.config().RopeInverseFrequencies()),
      options_(std::move(options)) {
  assert(mode != Mode::kKvcomm || !options_.base_prefix.empty());
}

SegmentKey SegmentReuse::ContextKey(const TokenizedPrompt& prompt, const SegmentSpan& span) const {
  std::span<const int32_t> tokens(prompt.tokens);
  return ComputeContextKey(model_.fingerprint(), client_.options().name_space,
                           TokenPrefixHash(tokens.first(span.begin)),
                           tokens.subspan(span.begin, span.tokens()));
}

Result<ImportResult> SegmentReuse::Import(const TokenizedPrompt& prompt,
                                          const std::vector<SegmentSpan>& spans,
                                          const std::string& agent, runtime::KvCache& cache) {
  if (mode_ == Mode::kKvcomm) return ImportPlanned(prompt, spans, agent, cache);
  ImportResult result;
  result.source.assign(spans.size(), SpanSource::kComputed);
  std::vector<std::pair<SegmentKey, client::KeyKind>> keys;
  for (const auto& span : spans)
    keys.emplace_back(ContextKey(prompt, span), client::KeyKind::kContext);
  KVCOMM_ASSIGN_OR_RETURN(auto found, client_.Lookup(keys));
  size_t i = 0;
  for (; i < spans.size() && found[i].found; ++i) {
    KVCOMM_ASSIGN_OR_RETURN(auto segment,
                            Fetch(keys[i].first, client::KeyKind::kContext, spans[i]));
    KVCOMM_RETURN_IF_ERROR(
        cache.Import(segment.info.layout, segment.payload.span(), spans[i].begin));
    result.source[i] = SpanSource::kExact;
  }
  if (mode_ != Mode::kNaive) return result;
  for (; i < spans.size(); ++i) {
    if (!spans[i].placeholder()) continue;
    KVCOMM_ASSIGN_OR_RETURN(bool realigned, ImportRealigned(prompt, spans[i], cache));
    if (realigned) result.source[i] = SpanSource::kRealigned;
  }
  return result;
}

Result<client::SegmentData> SegmentReuse::Fetch(const SegmentKey& key, client::KeyKind kind,
                                                const SegmentSpan& span) {
  KVCOMM_ASSIGN_OR_RETURN(auto segment, client_.Get(key, kind));
  if (segment.info.layout.tokens != static_cast<uint32_t>(span.tokens()))
    return Error(ErrorCode::kInternal, "kvcommd returned a segment of the wrong length");
  return segment;
}

Result<bool> SegmentReuse::ImportRealigned(const TokenizedPrompt& prompt, const SegmentSpan& span,
                                           runtime::KvCache& cache) {
  std::span<const int32_t> ids = std::span(prompt.tokens).subspan(span.begin, span.tokens());
  const SegmentKey key = ComputeContentKey(model_.fingerprint(), client_.options().name_space, ids);
  // One round trip: a miss comes back as NotFound, which only means "compute it here".
  auto segment = Fetch(key, client::KeyKind::kContent, span);
  if (!segment.ok() && segment.status().code() == ErrorCode::kNotFound) return false;
  KVCOMM_RETURN_IF_ERROR(segment.status());
  KvLayout layout = segment->info.layout;

  std::vector<float> base(layout.PayloadBytes() / DTypeSize(layout.dtype));
  const int64_t n = static_cast<int64_t>(base.size());
  KVCOMM_RETURN_IF_ERROR(
      kernels::ConvertDType({const_cast<std::byte*>(segment->payload.data()), layout.dtype, {n}},
                            {base.data(), DType::kF32, {n}}));
  std::vector<int32_t> from(span.tokens()), to(span.tokens());
  std::iota(from.begin(), from.end(), segment->info.first_position);
  std::iota(to.begin(), to.end(), static_cast<int32_t>(span.begin));
  std::vector<float> realigned(base.size());
  const kernels::RealignShape shape{layout.num_layers, layout.kv_heads, layout.tokens,
                                    layout.head_dim, /*anchors=*/0};
  kernels::cpu::RealignKv(shape, base.data(), from, to, inv_freq_, nullptr, nullptr, nullptr,
                          realigned.data());
  layout.dtype = DType::kF32;
  KVCOMM_RETURN_IF_ERROR(cache.Import(layout, std::as_bytes(std::span(realigned)), span.begin));
  return true;
}

Status SegmentReuse::PutSpan(const TokenizedPrompt& prompt, const SegmentSpan& span,
                             const runtime::KvCache& cache) {
  std::span<const int32_t> tokens(prompt.tokens);
  client::PutRequest put;
  put.layout = cache.SegmentLayout(span.tokens(), dtype_);
  auto ids = tokens.subspan(span.begin, span.tokens());
  put.token_ids.assign(ids.begin(), ids.end());
  put.first_position = static_cast<int32_t>(span.begin);
  put.prefix_hash = TokenPrefixHash(tokens.first(span.begin));
  if (options_.delivery == client::Delivery::kDeviceIpc && dtype_ == cache.NativeDType()) {
    // Written from the cache straight into kvcommd's arena, on the GPU.
    return client_
        .PutOnDevice(put,
                     [&](std::byte* device) { return cache.CopyOut(span.begin, span.end, device); })
        .status();
  }
  KVCOMM_ASSIGN_OR_RETURN(put.payload, cache.Export(span.begin, span.end, dtype_));
  return client_.Put(put).status();
}

Status SegmentReuse::Store(const TokenizedPrompt& prompt, const std::vector<SegmentSpan>& spans,
                           const ImportResult& imported, const runtime::KvCache& cache) {
  for (size_t i = 0; i < spans.size(); ++i) {
    if (imported.source[i] == SpanSource::kRealigned) break;
    if (imported.source[i] == SpanSource::kComputed)
      KVCOMM_RETURN_IF_ERROR(PutSpan(prompt, spans[i], cache));
  }
  std::span<const int32_t> tokens(prompt.tokens);
  for (size_t i : imported.later_bases) {
    const auto content = tokens.subspan(spans[i].begin, spans[i].tokens());
    const SegmentKey key = BaseKey(content);
    if (stored_bases_.contains(key)) continue;  // the same content twice in one prompt
    KVCOMM_RETURN_IF_ERROR(PutBase(content, spans[i].kind));
    stored_bases_.insert(key);
  }
  return Status();
}

client::ReuseModel SegmentReuse::ReuseModel() const {
  const auto& c = model_.config();
  const KvLayout geometry{static_cast<uint32_t>(c.num_layers),
                          static_cast<uint32_t>(c.num_kv_heads), 0,
                          static_cast<uint32_t>(c.head_dim), dtype_};
  return {geometry, inv_freq_, options_.base_prefix};
}

SegmentKey SegmentReuse::BaseKey(std::span<const int32_t> content) const {
  return ComputeContextKey(model_.fingerprint(), client_.options().name_space,
                           TokenPrefixHash(options_.base_prefix), content);
}

Status SegmentReuse::EnsureBases(const TokenizedPrompt& prompt,
                                 const std::vector<SegmentSpan>& spans,
                                 std::vector<size_t>& later) {
  std::vector<size_t> placeholders;
  std::vector<std::pair<SegmentKey, client::KeyKind>> keys;
  std::span<const int32_t> tokens(prompt.tokens);
  for (size_t i = 0; i < spans.size(); ++i) {
    if (!spans[i].placeholder()) continue;
    const SegmentKey key = BaseKey(tokens.subspan(spans[i].begin, spans[i].tokens()));
    if (stored_bases_.contains(key)) continue;
    placeholders.push_back(i);
    keys.emplace_back(key, client::KeyKind::kContext);
  }
  if (keys.empty()) return Status();
  KVCOMM_ASSIGN_OR_RETURN(auto found, client_.Lookup(keys));
  for (size_t k = 0; k < placeholders.size(); ++k) {
    if (!found[k].found) {
      if (options_.bases_after_reply) {
        later.push_back(placeholders[k]);
        continue;
      }
      const SegmentSpan& span = spans[placeholders[k]];
      KVCOMM_RETURN_IF_ERROR(PutBase(tokens.subspan(span.begin, span.tokens()), span.kind));
    }
    stored_bases_.insert(keys[k].first);
  }
  return Status();
}

Status SegmentReuse::PutBase(std::span<const int32_t> content, SegmentKind kind) {
  TokenizedPrompt base{options_.base_prefix, {}};
  base.tokens.insert(base.tokens.end(), content.begin(), content.end());
  KVCOMM_ASSIGN_OR_RETURN(auto cache, model_.NewCache(static_cast<int64_t>(base.tokens.size())));
  KVCOMM_RETURN_IF_ERROR(model_.Forward(base.tokens, cache).status());
  const int64_t first = static_cast<int64_t>(options_.base_prefix.size());
  return PutSpan(base, {first, first + static_cast<int64_t>(content.size()), kind, ""}, cache);
}

Status SegmentReuse::StoreBase(std::span<const int32_t> content) {
  assert(mode_ == Mode::kKvcomm);
  const SegmentKey key = BaseKey(content);
  KVCOMM_ASSIGN_OR_RETURN(auto found, client_.Lookup({{key, client::KeyKind::kContext}}));
  if (!found.front().found) KVCOMM_RETURN_IF_ERROR(PutBase(content, SegmentKind::kMessage));
  stored_bases_.insert(key);
  return Status();
}

size_t TrueContextEnd(const std::vector<size_t>& reported, const std::vector<SegmentSpan>& spans) {
  size_t end = 0;
  for (size_t i : reported) {
    const bool reports_following = i + 1 < spans.size() && !spans[i + 1].placeholder();
    end = std::max(end, i + (reports_following ? 2 : 1));
  }
  return end;
}

std::vector<size_t> ReportsWorthTheirCost(std::vector<size_t> reported,
                                          const std::vector<SegmentSpan>& spans,
                                          const std::vector<bool>& realigned) {
  // A report pays off later, in other turns' estimates; recomputing up to 4x its tokens kept
  // the reports aggregation and fact relay need (dropping any report a recompute outweighs cost
  // them answers, bench/RESULTS.md) and still spares a long document for a short message.
  constexpr int64_t kRecomputedPerReported = 4;
  std::sort(reported.begin(), reported.end());
  while (!reported.empty()) {
    int64_t recomputed = 0, reported_tokens = 0;
    const size_t end = TrueContextEnd(reported, spans);
    for (size_t i = 0; i < end; ++i)
      if (realigned[i]) recomputed += spans[i].tokens();
    for (size_t i : reported) {
      reported_tokens += spans[i].tokens();
      if (i + 1 < spans.size() && !spans[i + 1].placeholder())
        reported_tokens += spans[i + 1].tokens();
    }
    if (recomputed <= kRecomputedPerReported * reported_tokens) break;
    reported.pop_back();
  }
  return reported;
}

Result<ImportResult> SegmentReuse::ImportPlanned(const TokenizedPrompt& prompt,
                                                 const std::vector<SegmentSpan>& spans,
                                                 const std::string& agent,
                                                 runtime::KvCache& cache) {
  using Clock = std::chrono::steady_clock;
  auto lap = Clock::now();
  auto seconds = [&lap] {
    const auto now = Clock::now();
    const double s = std::chrono::duration<double>(now - lap).count();
    lap = now;
    return s;
  };
  ImportResult result;
  KVCOMM_RETURN_IF_ERROR(EnsureBases(prompt, spans, result.later_bases));
  result.bases_seconds = seconds();
  client::PlanRequest request{agent, ReuseModel(), {}, options_.delivery};
  std::span<const int32_t> tokens(prompt.tokens);
  for (const auto& span : spans) {
    auto ids = tokens.subspan(span.begin, span.tokens());
    request.segments.push_back({span.placeholder(), span.slot, {ids.begin(), ids.end()}});
  }
  KVCOMM_ASSIGN_OR_RETURN(auto prompt_plan, client_.PlanPrompt(request));
  result.plan_seconds = seconds();
  result.check_reuse = prompt_plan.check_reuse;
  const std::vector<client::SegmentPlan>& plans = prompt_plan.segments;
  result.source.assign(spans.size(), SpanSource::kComputed);
  for (size_t i = 0; i < spans.size(); ++i) {
    if (plans[i].report_actual) result.report.push_back(i);
    if (spans[i].placeholder() && plans[i].decision == client::ReuseDecision::kPrefill &&
        !plans[i].report_actual)
      stored_bases_.erase(BaseKey(tokens.subspan(spans[i].begin, spans[i].tokens())));
  }
  // With true_context_anchors, a turn that makes anchors computes everything not exact up to
  // the last span it reports (and the template span after it, reported too), so what it reports
  // is the true KV; the realigned spans after that are reused. Reports not worth that recompute
  // are not made. Otherwise every realigned span is imported and the reports are made over them.
  size_t true_context_end = 0;
  if (options_.true_context_anchors) {
    std::vector<bool> realigned(spans.size());
    for (size_t i = 0; i < spans.size(); ++i)
      realigned[i] = plans[i].decision == client::ReuseDecision::kRealigned;
    result.report = ReportsWorthTheirCost(std::move(result.report), spans, realigned);
    true_context_end = TrueContextEnd(result.report, spans);
  }
  Status imported;
  for (size_t i = 0; i < spans.size(); ++i) {
    const auto& plan = plans[i];
    if (plan.lease_id != 0) result.leases.push_back(plan.lease_id);
    if (!imported.ok() || plan.decision == client::ReuseDecision::kPrefill) continue;
    if (i < true_context_end && plan.decision != client::ReuseDecision::kExact) {
      result.recomputed_tokens += spans[i].tokens();
      continue;
    }
    const auto kv =
        plan.device ? std::span(plan.device, plan.layout.PayloadBytes()) : plan.payload.span();
    imported = cache.Import(plan.layout, kv, spans[i].begin);
    result.source[i] = plan.decision == client::ReuseDecision::kExact ? SpanSource::kExact
                                                                      : SpanSource::kRealigned;
  }
  result.copy_seconds = seconds();
  if (!imported.ok()) {
    (void)ReleaseLeases(result);
    return imported;
  }
  return result;
}

Status SegmentReuse::ReleaseLeases(ImportResult& imported) {
  if (imported.leases.empty()) return Status();
  const std::vector<uint64_t> leases = std::move(imported.leases);
  imported.leases.clear();
  KVCOMM_ASSIGN_OR_RETURN(uint32_t held, client_.ReleaseLeases(leases));
  // One that expired before it was given back may have been overwritten while it was copied.
  if (held != leases.size())
    return Error(ErrorCode::kDeadlineExceeded,
                 "{} of {} KV leases expired before they were released (raise ipc.lease_ttl_ms)",
                 leases.size() - held, leases.size());
  return Status();
}

std::vector<std::string> RealignedSlots(const std::vector<SegmentSpan>& spans,
                                        const ImportResult& imported) {
  std::vector<std::string> slots;
  for (size_t i = 0; i < spans.size(); ++i) {
    if (!spans[i].placeholder() || imported.source[i] != SpanSource::kRealigned) continue;
    if (std::find(slots.begin(), slots.end(), spans[i].slot) == slots.end())
      slots.push_back(spans[i].slot);
  }
  return slots;
}

std::vector<SpanSource> KeepSlots(const std::vector<SegmentSpan>& spans,
                                  const std::vector<SpanSource>& source,
                                  std::span<const std::string> kept) {
  std::vector<SpanSource> out(source.size(), SpanSource::kComputed);
  bool owner_kept = false;  // the last placeholder so far has a kept slot
  for (size_t i = 0; i < spans.size(); ++i) {
    if (spans[i].placeholder())
      owner_kept = std::find(kept.begin(), kept.end(), spans[i].slot) != kept.end();
    if (source[i] == SpanSource::kExact || (source[i] == SpanSource::kRealigned && owner_kept))
      out[i] = source[i];
  }
  return out;
}

Status SegmentReuse::ReportCheck(std::vector<std::string> slots, std::vector<std::string> blamed,
                                 const std::string& agent, bool reply_changed,
                                 double next_token_kl) {
  return client_.ReportCheck(
      {agent, std::move(slots), reply_changed, next_token_kl, std::move(blamed)});
}

Status SegmentReuse::Report(const TokenizedPrompt& prompt, const std::vector<SegmentSpan>& spans,
                            const ImportResult& imported, const std::string& agent,
                            const runtime::KvCache& cache) {
  for (size_t i : imported.report)
    KVCOMM_RETURN_IF_ERROR(ReportSpan(prompt, spans, i, agent, cache, /*offered=*/false));
  // New content whose base was stored after the reply: its KV here is offered as an anchor's
  // (with true_context_anchors only if nothing estimated came before it, so that it is its true
  // KV in this prompt), and sent only if kvcommd wants it (most offers, once the pool covers the
  // slot, are not).
  std::unordered_set<SegmentKey, Hash128Hasher> offered;
  std::span<const int32_t> tokens(prompt.tokens);
  auto realigned_before = [&](size_t end) {
    return std::any_of(imported.source.begin(), imported.source.begin() + end,
                       [](SpanSource s) { return s == SpanSource::kRealigned; });
  };
  for (size_t i : imported.later_bases) {
    if (options_.true_context_anchors && realigned_before(TrueContextEnd({i}, spans))) continue;
    auto content = tokens.subspan(spans[i].begin, spans[i].tokens());
    if (!offered.insert(BaseKey(content)).second) continue;
    KVCOMM_ASSIGN_OR_RETURN(
        const bool wanted,
        client_.OfferAnchor(
            {agent, spans[i].slot, ReuseModel(), {content.begin(), content.end()}}));
    if (wanted)
      KVCOMM_RETURN_IF_ERROR(ReportSpan(prompt, spans, i, agent, cache, /*offered=*/true));
  }
  return Status();
}

Status SegmentReuse::ReportSpan(const TokenizedPrompt& prompt,
                                const std::vector<SegmentSpan>& spans, size_t i,
                                const std::string& agent, const runtime::KvCache& cache,
                                bool offered) {
  std::span<const int32_t> tokens(prompt.tokens);
  const SegmentSpan& span = spans[i];
  client::ActualReport report;
  report.offered = offered;
  report.agent = agent;
  report.slot = span.slot;
  report.model = ReuseModel();
  auto ids = tokens.subspan(span.begin, span.tokens());
  report.placeholder_tokens.assign(ids.begin(), ids.end());
  report.placeholder_position = static_cast<int32_t>(span.begin);
  const SegmentSpan* next =
      i + 1 < spans.size() && !spans[i + 1].placeholder() ? &spans[i + 1] : nullptr;
  if (next != nullptr) {
    auto next_ids = tokens.subspan(next->begin, next->tokens());
    report.following_tokens.assign(next_ids.begin(), next_ids.end());
    report.following_position = static_cast<int32_t>(next->begin);
  }
  if (options_.delivery == client::Delivery::kDeviceIpc && dtype_ == cache.NativeDType()) {
    // Written from the cache straight into kvcommd's arena, on the GPU (as PutSpan).
    return client_.ReportActualOnDevice(report, [&](std::byte* placeholder, std::byte* following) {
      KVCOMM_RETURN_IF_ERROR(cache.CopyOut(span.begin, span.end, placeholder));
      return next != nullptr ? cache.CopyOut(next->begin, next->end, following) : Status::Ok();
    });
  }
  KVCOMM_ASSIGN_OR_RETURN(report.placeholder_kv, cache.Export(span.begin, span.end, dtype_));
  if (next != nullptr) {
    KVCOMM_ASSIGN_OR_RETURN(report.following_kv, cache.Export(next->begin, next->end, dtype_));
  }
  return client_.ReportActual(report);
}

}  // namespace kvcomm::pipeline
