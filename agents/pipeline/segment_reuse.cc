#include "agents/pipeline/segment_reuse.h"

#include <numeric>

#include "kernels/ops.h"
#include "kernels/realign.h"

namespace kvcomm::pipeline {

Result<Mode> ParseMode(std::string_view name) {
  if (name == "dense") return Mode::kDense;
  if (name == "prefix") return Mode::kPrefix;
  if (name == "naive") return Mode::kNaive;
  return InvalidArgument("unknown mode '{}' (dense, prefix or naive)", name);
}

std::string_view ModeName(Mode mode) {
  switch (mode) {
    case Mode::kDense:
      return "dense";
    case Mode::kPrefix:
      return "prefix";
    case Mode::kNaive:
      return "naive";
  }
  return "?";
}

std::vector<SegmentSpan> SegmentSpans(const TokenizedPrompt& prompt,
                                      const std::vector<PromptSegment>& segments) {
  std::vector<SegmentSpan> spans;
  const auto& begins = prompt.segment_begin;
  for (size_t i = 0; i < begins.size(); ++i) {
    const int64_t begin = i == 0 ? 0 : begins[i];
    const int64_t end =
        i + 1 < begins.size() ? begins[i + 1] : static_cast<int64_t>(prompt.tokens.size());
    if (end > begin) spans.push_back({begin, end, segments[i].kind});
  }
  return spans;
}

SegmentReuse::SegmentReuse(client::Client& client, const runtime::ModelConfig& config,
                           ModelFingerprint model, DType dtype, Mode mode)
    : client_(client),
      model_(model),
      dtype_(dtype),
      mode_(mode),
      inv_freq_(config.RopeInverseFrequencies()) {}

SegmentKey SegmentReuse::ContextKey(const TokenizedPrompt& prompt, const SegmentSpan& span) const {
  std::span<const int32_t> tokens(prompt.tokens);
  return ComputeContextKey(model_, client_.options().name_space,
                           TokenPrefixHash(tokens.first(span.begin)),
                           tokens.subspan(span.begin, span.tokens()));
}

Result<std::vector<bool>> SegmentReuse::Import(const TokenizedPrompt& prompt,
                                               const std::vector<SegmentSpan>& spans,
                                               runtime::KvCache& cache) {
  std::vector<bool> imported(spans.size(), false);
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
    imported[i] = true;
  }
  if (mode_ != Mode::kNaive) return imported;
  for (; i < spans.size(); ++i) {
    if (spans[i].kind == SegmentKind::kText) continue;
    KVCOMM_ASSIGN_OR_RETURN(imported[i], ImportRealigned(prompt, spans[i], cache));
  }
  return imported;
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
  const SegmentKey key = ComputeContentKey(model_, client_.options().name_space, ids);
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

Status SegmentReuse::Store(const TokenizedPrompt& prompt, const std::vector<SegmentSpan>& spans,
                           const std::vector<bool>& imported, const runtime::KvCache& cache) {
  std::span<const int32_t> tokens(prompt.tokens);
  for (size_t i = 0; i < spans.size(); ++i) {
    if (imported[i]) continue;
    const auto& span = spans[i];
    client::PutRequest put;
    put.layout = cache.SegmentLayout(span.tokens(), dtype_);
    KVCOMM_ASSIGN_OR_RETURN(put.payload, cache.Export(span.begin, span.end, dtype_));
    auto ids = tokens.subspan(span.begin, span.tokens());
    put.token_ids.assign(ids.begin(), ids.end());
    put.first_position = static_cast<int32_t>(span.begin);
    put.prefix_hash = TokenPrefixHash(tokens.first(span.begin));
    KVCOMM_RETURN_IF_ERROR(client_.Put(put).status());
  }
  return Status();
}

}  // namespace kvcomm::pipeline
