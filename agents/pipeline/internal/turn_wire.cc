#include "agents/pipeline/internal/turn_wire.h"

namespace kvcomm::pipeline::internal {
namespace {

proto::PromptSegmentKind ToWire(SegmentKind kind) {
  switch (kind) {
    case SegmentKind::kText:
      return proto::PromptSegmentKind::TEXT;
    case SegmentKind::kInput:
      return proto::PromptSegmentKind::INPUT;
    case SegmentKind::kDocument:
      return proto::PromptSegmentKind::DOCUMENT;
    case SegmentKind::kMessage:
      return proto::PromptSegmentKind::MESSAGE;
  }
  return proto::PromptSegmentKind::TEXT;
}

Result<SegmentKind> FromWire(proto::PromptSegmentKind kind) {
  switch (kind) {
    case proto::PromptSegmentKind::TEXT:
      return SegmentKind::kText;
    case proto::PromptSegmentKind::INPUT:
      return SegmentKind::kInput;
    case proto::PromptSegmentKind::DOCUMENT:
      return SegmentKind::kDocument;
    case proto::PromptSegmentKind::MESSAGE:
      return SegmentKind::kMessage;
  }
  return InvalidArgument("segments: unknown segment kind {}", static_cast<int>(kind));
}

proto::PipelineMode ToWire(Mode mode) {
  switch (mode) {
    case Mode::kDense:
      return proto::PipelineMode::DENSE;
    case Mode::kPrefix:
      return proto::PipelineMode::PREFIX;
    case Mode::kNaive:
      return proto::PipelineMode::NAIVE;
    case Mode::kKvcomm:
      return proto::PipelineMode::KVCOMM;
  }
  return proto::PipelineMode::DENSE;
}

Result<Mode> FromWire(proto::PipelineMode mode) {
  switch (mode) {
    case proto::PipelineMode::DENSE:
      return Mode::kDense;
    case proto::PipelineMode::PREFIX:
      return Mode::kPrefix;
    case proto::PipelineMode::NAIVE:
      return Mode::kNaive;
    case proto::PipelineMode::KVCOMM:
      return Mode::kKvcomm;
  }
  return InvalidArgument("mode: unknown pipeline mode {}", static_cast<int>(mode));
}

}  // namespace

void WriteTurnRequest(proto::TurnRequest::Builder out, uint64_t id, const WorkerTurn& turn) {
  const TurnRequest& r = turn.request;
  out.setId(id);
  out.setProtocolVersion(proto::WORKER_PROTOCOL_VERSION);
  out.setTaskId(r.task_id);
  out.setAgent(r.agent);
  out.setSlotPrefix(r.slot_prefix);
  auto segments = out.initSegments(static_cast<unsigned>(r.segments.size()));
  for (size_t i = 0; i < r.segments.size(); ++i) {
    segments[i].setKind(ToWire(r.segments[i].kind));
    segments[i].setText(r.segments[i].text);
    segments[i].setSlot(r.segments[i].slot);
  }
  out.setTemperature(r.sampling.temperature);
  out.setTopP(r.sampling.top_p);
  out.setSeed(r.sampling.seed);
  out.setMaxReplyTokens(static_cast<uint32_t>(r.max_reply_tokens));
  out.setMode(ToWire(turn.options.mode));
  out.setNamespace(turn.name_space);
  out.setMeasureFidelity(turn.options.measure_fidelity);
  out.setBasesAfterReply(turn.options.bases_after_reply);
  out.setTrueContextAnchors(turn.options.true_context_anchors);
  out.setReplyIsRead(r.reply_is_read);
}

Result<WorkerTurn> ReadTurnRequest(proto::TurnRequest::Reader in) {
  if (in.getProtocolVersion() != proto::WORKER_PROTOCOL_VERSION)
    return Error(ErrorCode::kVersionMismatch,
                 "worker protocol version {} is not spoken here (this worker speaks {})",
                 in.getProtocolVersion(), proto::WORKER_PROTOCOL_VERSION);
  WorkerTurn turn;
  TurnRequest& r = turn.request;
  r.task_id = in.getTaskId();
  r.agent = in.getAgent();
  r.slot_prefix = in.getSlotPrefix();
  for (auto segment : in.getSegments()) {
    KVCOMM_ASSIGN_OR_RETURN(auto kind, FromWire(segment.getKind()));
    r.segments.push_back({kind, segment.getText(), segment.getSlot()});
  }
  r.sampling.temperature = in.getTemperature();
  r.sampling.top_p = in.getTopP();
  r.sampling.seed = in.getSeed();
  r.max_reply_tokens = in.getMaxReplyTokens();
  r.reply_is_read = in.getReplyIsRead();
  KVCOMM_ASSIGN_OR_RETURN(turn.options.mode, FromWire(in.getMode()));
  turn.options.measure_fidelity = in.getMeasureFidelity();
  turn.options.bases_after_reply = in.getBasesAfterReply();
  turn.options.true_context_anchors = in.getTrueContextAnchors();
  turn.name_space = in.getNamespace();
  if (turn.options.mode != Mode::kDense && turn.name_space.empty())
    return InvalidArgument("namespace: the reuse modes need a kvcommd namespace");
  KVCOMM_RETURN_IF_ERROR(r.Validate());
  return turn;
}

void WriteTurnStats(proto::TurnStats::Builder out, const TurnResult& t) {
  out.setReply(t.reply);
  out.setPromptTokens(t.prompt_tokens);
  out.setReusedTokens(t.reused_tokens);
  out.setRealignedTokens(t.realigned_tokens);
  out.setPlaceholderTokens(t.placeholder_tokens);
  out.setReusedPlaceholderTokens(t.reused_placeholder_tokens);
  out.setMadeAnchors(t.made_anchors);
  out.setRecomputedTokens(t.recomputed_tokens);
  out.setFallback(t.fallback);
  out.setStoreFailed(t.store_failed);
  out.setDaemonError(t.daemon_error);
  out.setPrefillSeconds(t.prefill_seconds);
  out.setSeconds(t.seconds);
  out.setStoreSeconds(t.store_seconds);
  out.setNextTokenKl(t.next_token_kl);
  out.setKvRelativeError(t.kv_relative_error);
  out.setChecked(t.checked);
  out.setCheckChanged(t.check_changed);
}

TurnResult ReadTurnStats(proto::TurnStats::Reader in) {
  TurnResult t;
  t.reply = in.getReply();
  t.prompt_tokens = in.getPromptTokens();
  t.reused_tokens = in.getReusedTokens();
  t.realigned_tokens = in.getRealignedTokens();
  t.placeholder_tokens = in.getPlaceholderTokens();
  t.reused_placeholder_tokens = in.getReusedPlaceholderTokens();
  t.made_anchors = in.getMadeAnchors();
  t.recomputed_tokens = in.getRecomputedTokens();
  t.fallback = in.getFallback();
  t.store_failed = in.getStoreFailed();
  t.daemon_error = in.getDaemonError();
  t.prefill_seconds = in.getPrefillSeconds();
  t.seconds = in.getSeconds();
  t.store_seconds = in.getStoreSeconds();
  t.next_token_kl = in.getNextTokenKl();
  t.kv_relative_error = in.getKvRelativeError();
  t.checked = in.getChecked();
  t.check_changed = in.getCheckChanged();
  return t;
}

}  // namespace kvcomm::pipeline::internal
