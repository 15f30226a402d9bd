#include "daemon/internal/reuse_wire.h"

#include "daemon/device_leases.h"
#include "kernels/device.h"
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

namespace {

// The reported KV a worker wrote into a lease: copied out, checked against its descriptions,
// and the lease released on every path.
Status ReadKvLease(capnp::List<proto::TensorDesc>::Reader tensors, uint64_t id,
                   DeviceLeases* leases, const KvLayout& p_layout, const KvLayout& t_layout,
                   ActualInput& input) {
  if (leases == nullptr)
    return Error(ErrorCode::kUnavailable, "kvcommd has no lease arena (ipc.arena is 0)");
  KVCOMM_ASSIGN_OR_RETURN(const DeviceLeases::Lease lease, leases->Find(id));
  const uint64_t p_bytes = p_layout.PayloadBytes();
  const uint64_t t_bytes = tensors.size() == 2 ? t_layout.PayloadBytes() : 0;
  Status read = [&]() -> Status {
    if (lease.bytes != p_bytes + t_bytes)
      return InvalidArgument("lease {} holds {} bytes, the reported KV is {}", id, lease.bytes,
                             p_bytes + t_bytes);
    KVCOMM_RETURN_IF_ERROR(wire::CheckKvTensorShape(tensors[0], p_layout, p_bytes));
    KVCOMM_ASSIGN_OR_RETURN(input.placeholder_kv, kernels::CopyDeviceToBlob(lease.data, p_bytes));
    if (t_bytes == 0) return Status::Ok();
    KVCOMM_RETURN_IF_ERROR(wire::CheckKvTensorShape(tensors[1], t_layout, t_bytes));
    KVCOMM_ASSIGN_OR_RETURN(input.following_kv,
                            kernels::CopyDeviceToBlob(lease.data + p_bytes, t_bytes));
    return Status::Ok();
  }();
  if (!leases->Release(id).ok() && read.ok())
    return Error(ErrorCode::kDeadlineExceeded,
                 "lease {} expired before its report was read (raise ipc.lease_ttl_ms)", id);
  return read;
}

}  // namespace

Result<ActualInput> ReadActualInput(proto::ReportActual::Reader report,
                                    std::vector<zmq::message_t>& frames, DeviceLeases* leases) {
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
  const uint64_t lease = report.getLease();
  const size_t expected_frames = lease != 0 ? 0 : expected;
  if (frames.size() - 1 != expected_frames || tensors.size() != expected) {
    return InvalidArgument("ReportActual needs {} KV frames and {} descriptions{}, got {} and {}",
                           expected_frames, expected, lease != 0 ? " (its KV is in a lease)" : "",
                           frames.size() - 1, tensors.size());
  }
  if (input.placeholder_tokens.empty() || input.placeholder_tokens.size() > KvLayout::kMaxTokens)
    return InvalidArgument("placeholderTokens must have 1..{} tokens", KvLayout::kMaxTokens);
  if (input.following_tokens.size() > KvLayout::kMaxTokens)
    return InvalidArgument("followingTokens has too many tokens");
  KvLayout p_layout = input.model.geometry, t_layout = input.model.geometry;
  p_layout.tokens = static_cast<uint32_t>(input.placeholder_tokens.size());
  t_layout.tokens = static_cast<uint32_t>(input.following_tokens.size());
  if (lease != 0) {
    KVCOMM_RETURN_IF_ERROR(ReadKvLease(tensors, lease, leases, p_layout, t_layout, input));
  } else {
    KVCOMM_ASSIGN_OR_RETURN(input.placeholder_kv, ReadKvFrame(tensors, frames, 1, p_layout));
    if (expected == 2) {
      KVCOMM_ASSIGN_OR_RETURN(input.following_kv, ReadKvFrame(tensors, frames, 2, t_layout));
    }
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
  auto blamed = report.getBlamedSlots();
  if (blamed.size() > slots.size())
    return InvalidArgument("a check blames {} slots of {}", blamed.size(), slots.size());
  for (auto slot : blamed) input.blamed_slots.push_back(ReadText(slot));
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
