#include "daemon/internal/reuse_wire.h"

#include "schemas/wire.h"

namespace kvcomm::daemon::internal {
namespace {

constexpr uint32_t kMaxListEntries = 1u << 24;

Result<std::vector<int32_t>> ReadInts(capnp::List<int32_t>::Reader list, std::string_view what) {
  if (list.size() > kMaxListEntries)
    return InvalidArgument("{} has {} entries, at most {}", what, list.size(), kMaxListEntries);
  std::vector<int32_t> out;
  out.reserve(list.size());
  for (int32_t v : list) out.push_back(v);
  return out;
}

Result<ReuseModel> ReadModel(proto::ReuseModel::Reader in) {
  ReuseModel model;
  auto shape = in.getShape();
  const auto dtype = static_cast<uint32_t>(shape.getDtype());
  if (!IsValidDType(dtype)) return InvalidArgument("unknown dtype {}", dtype);
  model.geometry = {shape.getNumLayers(), shape.getKvHeads(), 0, shape.getHeadDim(),
                    static_cast<DType>(dtype)};
  auto freq = in.getRopeInvFreq();
  if (freq.size() > KvLayout::kMaxHeadDim)
    return InvalidArgument("ropeInvFreq has {} entries", freq.size());
  for (float f : freq) model.inv_freq.push_back(f);
  KVCOMM_ASSIGN_OR_RETURN(model.base_prefix, ReadInts(in.getBasePrefix(), "basePrefix"));
  KVCOMM_RETURN_IF_ERROR(model.Validate());
  return model;
}

std::string ReadText(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

// The KV frame `index` (1-based) checked against its description and `layout`.
Result<Blob> ReadKvFrame(capnp::List<proto::TensorDesc>::Reader tensors,
                         std::vector<zmq::message_t>& frames, size_t index,
                         const KvLayout& layout) {
  const zmq::message_t& frame = frames[index];
  std::span<const std::byte> bytes(static_cast<const std::byte*>(frame.data()), frame.size());
  KVCOMM_RETURN_IF_ERROR(wire::CheckKvTensor(tensors[index - 1], layout, bytes));
  return wire::FrameToBlob(std::move(frames[index]));
}

}  // namespace

Result<PlanInput> ReadPlanInput(proto::PlanPrompt::Reader plan) {
  PlanInput input;
  input.agent = ReadText(plan.getAgent());
  KVCOMM_ASSIGN_OR_RETURN(input.model, ReadModel(plan.getModel()));
  auto segments = plan.getSegments();
  if (segments.size() > kMaxListEntries)
    return InvalidArgument("a plan of {} segments", segments.size());
  for (auto s : segments) {
    PlanSegmentInput segment;
    switch (s.getRole()) {
      case proto::SegmentRole::TEMPLATE:
        break;
      case proto::SegmentRole::PLACEHOLDER:
        segment.placeholder = true;
        break;
      default:
        return InvalidArgument("unknown segment role {}", static_cast<int>(s.getRole()));
    }
    segment.slot = ReadText(s.getSlot());
    KVCOMM_ASSIGN_OR_RETURN(segment.tokens, ReadInts(s.getTokenIds(), "tokenIds"));
    input.segments.push_back(std::move(segment));
  }
  KVCOMM_RETURN_IF_ERROR(input.Validate());
  return input;
}

Result<ActualInput> ReadActualInput(proto::ReportActual::Reader report,
                                    std::vector<zmq::message_t>& frames) {
  ActualInput input;
  input.agent = ReadText(report.getAgent());
  input.slot = ReadText(report.getSlot());
  KVCOMM_ASSIGN_OR_RETURN(input.model, ReadModel(report.getModel()));
  KVCOMM_ASSIGN_OR_RETURN(input.placeholder_tokens,
                          ReadInts(report.getPlaceholderTokens(), "placeholderTokens"));
  KVCOMM_ASSIGN_OR_RETURN(input.following_tokens,
                          ReadInts(report.getFollowingTokens(), "followingTokens"));
  input.placeholder_position = report.getPlaceholderPosition();
  input.following_position = report.getFollowingPosition();
  input.offered = report.getOffered();
  const size_t expected = input.following_tokens.empty() ? 1 : 2;
  auto tensors = report.getTensors();
  if (frames.size() - 1 != expected || tensors.size() != expected) {
    return InvalidArgument("ReportActual needs {} KV frames and descriptions, got {} and {}",
                           expected, frames.size() - 1, tensors.size());
  }
  if (input.placeholder_tokens.empty() || input.placeholder_tokens.size() > KvLayout::kMaxTokens)
    return InvalidArgument("placeholderTokens must have 1..{} tokens", KvLayout::kMaxTokens);
  KvLayout layout = input.model.geometry;
  layout.tokens = static_cast<uint32_t>(input.placeholder_tokens.size());
  KVCOMM_ASSIGN_OR_RETURN(input.placeholder_kv, ReadKvFrame(tensors, frames, 1, layout));
  if (expected == 2) {
    if (input.following_tokens.size() > KvLayout::kMaxTokens)
      return InvalidArgument("followingTokens has too many tokens");
    layout.tokens = static_cast<uint32_t>(input.following_tokens.size());
    KVCOMM_ASSIGN_OR_RETURN(input.following_kv, ReadKvFrame(tensors, frames, 2, layout));
  }
  KVCOMM_RETURN_IF_ERROR(input.Validate());
  return input;
}

Result<OfferInput> ReadOfferInput(proto::OfferAnchor::Reader offer) {
  OfferInput input;
  input.agent = ReadText(offer.getAgent());
  input.slot = ReadText(offer.getSlot());
  KVCOMM_ASSIGN_OR_RETURN(input.model, ReadModel(offer.getModel()));
  KVCOMM_ASSIGN_OR_RETURN(input.placeholder_tokens,
                          ReadInts(offer.getPlaceholderTokens(), "placeholderTokens"));
  KVCOMM_RETURN_IF_ERROR(input.Validate());
  return input;
}

Result<CheckInput> ReadCheckInput(proto::ReportCheck::Reader report) {
  CheckInput input;
  input.agent = ReadText(report.getAgent());
  auto slots = report.getSlots();
  if (slots.size() > kMaxPlanSegments)
    return InvalidArgument("a check names {} slots, at most {}", slots.size(), kMaxPlanSegments);
  for (auto slot : slots) input.slots.push_back(ReadText(slot));
  input.reply_changed = report.getReplyChanged();
  input.next_token_kl = report.getNextTokenKl();
  KVCOMM_RETURN_IF_ERROR(input.Validate());
  return input;
}

void FillPlanResult(proto::PlanResult::Builder out, PromptPlanOutput& plan,
                    const DeviceLeases* leases, std::vector<zmq::message_t>& payload_out) {
  auto& plans = plan.segments;
  out.setCheckReuse(plan.check_reuse);
  size_t in_frames = 0;
  for (const auto& p : plans) in_frames += p.decision != Decision::kPrefill && !p.kv.lease;
  auto segments = out.initSegments(static_cast<unsigned>(plans.size()));
  auto tensors = out.initTensors(static_cast<unsigned>(in_frames));
  int32_t next = 0;
  for (unsigned i = 0; i < plans.size(); ++i) {
    auto& p = plans[i];
    segments[i].setDecision(p.decision == Decision::kExact       ? proto::ReuseDecision::EXACT
                            : p.decision == Decision::kRealigned ? proto::ReuseDecision::REALIGNED
                                                                 : proto::ReuseDecision::PREFILL);
    segments[i].setReportActual(p.report_actual);
    segments[i].setTensorIndex(-1);
    if (p.decision == Decision::kPrefill) continue;
    if (p.kv.lease) {
      auto lease = segments[i].initLease();
      lease.setId(p.kv.lease->id);
      lease.setOffset(p.kv.lease->offset);
      lease.setBytes(p.kv.lease->bytes);
      continue;
    }
    segments[i].setTensorIndex(next);
    wire::DescribeKvTensor(tensors[next], p.kv.layout, Checksum64(p.kv.kv.span()));
    payload_out.push_back(wire::BlobFrame(p.kv.kv));
    ++next;
  }
  if (leases != nullptr) FillArena(out.initArena(), *leases);
}

void FillArena(proto::DeviceArena::Builder out, const DeviceLeases& leases) {
  const std::string& handle = leases.ipc_handle();
  out.setIpcHandle(kj::arrayPtr(reinterpret_cast<const kj::byte*>(handle.data()), handle.size()));
  out.setArenaId(leases.arena_id());
  out.setDeviceUuid(leases.device_uuid());
  out.setBytes(leases.capacity());
}

void FillAnchorListing(proto::AnchorListing::Builder out, const std::vector<SlotListing>& slots) {
  auto list = out.initSlots(static_cast<unsigned>(slots.size()));
  for (unsigned i = 0; i < slots.size(); ++i) {
    list[i].setSlot(slots[i].slot);
    const auto& anchors = slots[i].anchors;
    auto entries = list[i].initAnchors(static_cast<unsigned>(anchors.size()));
    for (unsigned a = 0; a < anchors.size(); ++a) {
      wire::WriteKey(entries[a].initBaseKey(), anchors[a].base);
      entries[a].setTokens(anchors[a].tokens);
      entries[a].setActivations(anchors[a].activations);
      auto agents = entries[a].initAgents(static_cast<unsigned>(anchors[a].deltas.size()));
      unsigned k = 0;
      for (const auto& [agent, deltas] : anchors[a].deltas) agents.set(k++, agent);
    }
  }
}

void FillReuseCounters(capnp::List<proto::ReuseCounter>::Builder out,
                       const std::vector<ReuseCounter>& counters) {
  for (unsigned i = 0; i < counters.size(); ++i) {
    const auto& c = counters[i];
    out[i].setNamespace(c.name_space);
    out[i].setAgent(c.agent);
    out[i].setSlot(c.slot);
    out[i].setTokensRequested(c.tokens_requested);
    out[i].setTokensExact(c.tokens_exact);
    out[i].setTokensRealigned(c.tokens_realigned);
    out[i].setTokensPrefill(c.tokens_prefill);
    out[i].setAnchorsCreated(c.anchors_created);
    out[i].setAnchorsEvicted(c.anchors_evicted);
    out[i].setBytesMoved(c.bytes_moved);
    out[i].setRealignSeconds(c.realign_seconds);
    out[i].setPlanSeconds(c.plan_seconds);
    out[i].setChecks(c.checks);
    out[i].setChecksChanged(c.checks_changed);
    out[i].setTokensGated(c.tokens_gated);
  }
}

}  // namespace kvcomm::daemon::internal
