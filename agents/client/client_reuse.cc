// The KVCOMM reuse requests of the client (schemas/kvcomm.capnp, "KVCOMM reuse").
#include "agents/client/client.h"
#include "agents/client/internal/call.h"
#include "agents/client/internal/mapped_arena.h"

namespace kvcomm::client {

using internal::Guarded;
using internal::Unexpected;

namespace internal {

Result<const MappedArena*> MapArena(std::unique_ptr<MappedArena>& arena,
                                    proto::DeviceArena::Reader described) {
  const uint64_t id = described.getArenaId();
  if (arena && arena->id == id) return arena.get();
  KVCOMM_ASSIGN_OR_RETURN(std::string own_gpu, kernels::CudaDeviceUuid());
  const std::string daemon_gpu = described.getDeviceUuid().cStr();
  if (daemon_gpu != own_gpu)
    return Error(ErrorCode::kFailedPrecondition,
                 "device delivery needs kvcommd's GPU ({}); this process runs on {}", daemon_gpu,
                 own_gpu);
  auto handle = described.getIpcHandle();
  KVCOMM_ASSIGN_OR_RETURN(auto mapping,
                          kernels::IpcMapping::Open(std::string_view(
                              reinterpret_cast<const char*>(handle.begin()), handle.size())));
  arena = std::make_unique<MappedArena>(id, described.getBytes(), std::move(mapping));
  return arena.get();
}

Result<std::byte*> LeaseAddress(const MappedArena& arena, proto::DeviceLease::Reader lease,
                                uint64_t bytes, std::string_view what) {
  if (lease.getBytes() != bytes || lease.getOffset() > arena.bytes ||
      arena.bytes - lease.getOffset() < bytes)
    return Error(ErrorCode::kMalformedMessage,
                 "{}'s lease ({} bytes at {}) does not fit its {} bytes or the arena ({} bytes)",
                 what, lease.getBytes(), lease.getOffset(), bytes, arena.bytes);
  return arena.mapping.data() + lease.getOffset();
}

}  // namespace internal

Result<SegmentInfo> Client::PutOnDevice(const PutRequest& put,
                                        const std::function<Status(std::byte* device)>& write) {
  KVCOMM_RETURN_IF_ERROR(CheckPut(put));
  KVCOMM_ASSIGN_OR_RETURN(const uint64_t lease, WriteLease(put.layout.PayloadBytes(), write));
  return SendPut(put, Blob(), lease);
}

Result<uint64_t> Client::WriteLease(uint64_t bytes,
                                    const std::function<Status(std::byte*)>& write) {
  KVCOMM_CALL(response, [&](proto::Request::Builder request) {
    request.initReserveLease().setBytes(bytes);
    return std::vector<zmq::message_t>{};
  });
  uint64_t lease = 0;
  Status written = Guarded([&]() -> Status {
    if (!response.reply().isLeaseReserved()) return Unexpected("ReserveLease");
    auto reserved = response.reply().getLeaseReserved();
    lease = reserved.getLease().getId();
    KVCOMM_ASSIGN_OR_RETURN(const internal::MappedArena* arena,
                            internal::MapArena(arena_, reserved.getArena()));
    KVCOMM_ASSIGN_OR_RETURN(std::byte * at,
                            internal::LeaseAddress(*arena, reserved.getLease(), bytes, "a write"));
    return write(at);
  });
  if (!written.ok()) {
    if (lease != 0) (void)ReleaseLeases({lease});  // not left held until it expires
    return written;
  }
  return lease;
}

std::string_view ReuseDecisionName(ReuseDecision decision) {
  switch (decision) {
    case ReuseDecision::kExact:
      return "exact";
    case ReuseDecision::kRealigned:
      return "realigned";
    case ReuseDecision::kPrefill:
      return "prefill";
  }
  return "?";
}

namespace {

void WriteReuseModel(proto::ReuseModel::Builder out, const ReuseModel& model) {
  auto shape = out.initShape();
  shape.setNumLayers(model.geometry.num_layers);
  shape.setKvHeads(model.geometry.kv_heads);
  shape.setHeadDim(model.geometry.head_dim);
  shape.setDtype(static_cast<proto::DType>(model.geometry.dtype));
  auto freq = out.initRopeInvFreq(static_cast<unsigned>(model.rope_inv_freq.size()));
  for (unsigned i = 0; i < freq.size(); ++i) freq.set(i, model.rope_inv_freq[i]);
  auto prefix = out.initBasePrefix(static_cast<unsigned>(model.base_prefix.size()));
  for (unsigned i = 0; i < prefix.size(); ++i) prefix.set(i, model.base_prefix[i]);
}

void WriteTokens(capnp::List<int32_t>::Builder out, const std::vector<int32_t>& tokens) {
  for (unsigned i = 0; i < out.size(); ++i) out.set(i, tokens[i]);
}

}  // namespace

Result<PromptPlan> Client::PlanPrompt(const PlanRequest& plan) {
  const bool device = plan.delivery == Delivery::kDeviceIpc;
  KVCOMM_CALL(response, [&](proto::Request::Builder request) {
    auto out = request.initPlanPrompt();
    out.setAgent(plan.agent);
    WriteReuseModel(out.initModel(), plan.model);
    auto segments = out.initSegments(static_cast<unsigned>(plan.segments.size()));
    for (unsigned i = 0; i < segments.size(); ++i) {
      const auto& s = plan.segments[i];
      segments[i].setRole(s.placeholder ? proto::SegmentRole::PLACEHOLDER
                                        : proto::SegmentRole::TEMPLATE);
      segments[i].setSlot(s.slot);
      WriteTokens(segments[i].initTokenIds(static_cast<unsigned>(s.token_ids.size())), s.token_ids);
    }
    out.setDelivery(device ? proto::KvDelivery::DEVICE_IPC : proto::KvDelivery::FRAMES);
    return std::vector<zmq::message_t>{};
  });
  return Guarded([&]() -> Result<PromptPlan> {
    if (!response.reply().isPlan()) return Unexpected("PlanPrompt");
    auto result = response.reply().getPlan();
    auto segments = result.getSegments();
    auto tensors = result.getTensors();
    if (segments.size() != plan.segments.size() || tensors.size() + 1 != response.frames.size())
      return Error(ErrorCode::kMalformedMessage, "PlanPrompt reply does not match the request");
    const internal::MappedArena* arena = nullptr;
    PromptPlan prompt_plan;
    prompt_plan.check_reuse = result.getCheckReuse();
    std::vector<SegmentPlan>& out = prompt_plan.segments;
    out.resize(segments.size());
    for (unsigned i = 0; i < segments.size(); ++i) {
      const auto decision = static_cast<uint32_t>(segments[i].getDecision());
      if (decision > static_cast<uint32_t>(ReuseDecision::kPrefill))
        return Error(ErrorCode::kMalformedMessage, "unknown reuse decision {}", decision);
      out[i].decision = static_cast<ReuseDecision>(decision);
      out[i].report_actual = segments[i].getReportActual();
      if (out[i].decision == ReuseDecision::kPrefill) continue;
      out[i].layout = plan.model.geometry;
      out[i].layout.tokens = static_cast<uint32_t>(plan.segments[i].token_ids.size());
      if (device) {
        if (arena == nullptr) {
          if (!result.hasArena())
            return Error(ErrorCode::kMalformedMessage, "a device plan without its arena");
          KVCOMM_ASSIGN_OR_RETURN(arena, internal::MapArena(arena_, result.getArena()));
        }
        auto lease = segments[i].getLease();
        KVCOMM_ASSIGN_OR_RETURN(out[i].device,
                                internal::LeaseAddress(*arena, lease, out[i].layout.PayloadBytes(),
                                                       fmt::format("segment {}", i)));
        out[i].lease_id = lease.getId();
        continue;
      }
      const int32_t index = segments[i].getTensorIndex();
      if (index < 0 || static_cast<uint32_t>(index) >= tensors.size())
        return Error(ErrorCode::kMalformedMessage, "segment {} names tensor {}", i, index);
      auto& frame = response.frames[static_cast<size_t>(index) + 1];
      std::span<const std::byte> bytes(static_cast<const std::byte*>(frame.data()), frame.size());
      KVCOMM_RETURN_IF_ERROR(wire::CheckKvTensor(tensors[index], out[i].layout, bytes));
      out[i].payload = wire::FrameToBlob(std::move(frame));
    }
    return prompt_plan;
  });
}

Result<uint32_t> Client::ReleaseLeases(const std::vector<uint64_t>& ids) {
  KVCOMM_CALL(response, [&](proto::Request::Builder request) {
    auto out = request.initReleaseLeases().initIds(static_cast<unsigned>(ids.size()));
    for (unsigned i = 0; i < out.size(); ++i) out.set(i, ids[i]);
    return std::vector<zmq::message_t>{};
  });
  return Guarded([&]() -> Result<uint32_t> {
    if (!response.reply().isReleaseLeases()) return Unexpected("ReleaseLeases");
    return response.reply().getReleaseLeases();
  });
}

namespace {

// The layouts of a report's placeholder and following segment.
std::pair<KvLayout, KvLayout> ReportLayouts(const ActualReport& report) {
  KvLayout placeholder = report.model.geometry, following = report.model.geometry;
  placeholder.tokens = static_cast<uint32_t>(report.placeholder_tokens.size());
  following.tokens = static_cast<uint32_t>(report.following_tokens.size());
  return {placeholder, following};
}

}  // namespace

Status Client::ReportActual(const ActualReport& report) {
  const auto [layout, following] = ReportLayouts(report);
  if (report.placeholder_kv.size() != layout.PayloadBytes() ||
      report.following_kv.size() != following.PayloadBytes()) {
    return InvalidArgument("reported KV sizes do not match the model geometry and token counts");
  }
  return SendReport(report, 0);
}

Status Client::ReportActualOnDevice(
    const ActualReport& report,
    const std::function<Status(std::byte* placeholder, std::byte* following)>& write) {
  const auto [layout, following] = ReportLayouts(report);
  const uint64_t p_bytes = layout.PayloadBytes();
  const auto write_both = [&](std::byte* at) {
    return write(at, report.following_tokens.empty() ? nullptr : at + p_bytes);
  };
  KVCOMM_ASSIGN_OR_RETURN(const uint64_t lease,
                          WriteLease(p_bytes + following.PayloadBytes(), write_both));
  return SendReport(report, lease);
}

Status Client::SendReport(const ActualReport& report, uint64_t lease) {
  const auto [layout, following] = ReportLayouts(report);
  KVCOMM_CALL(response, [&](proto::Request::Builder request) {
    auto out = request.initReportActual();
    out.setAgent(report.agent);
    out.setSlot(report.slot);
    WriteReuseModel(out.initModel(), report.model);
    WriteTokens(out.initPlaceholderTokens(static_cast<unsigned>(report.placeholder_tokens.size())),
                report.placeholder_tokens);
    out.setPlaceholderPosition(report.placeholder_position);
    WriteTokens(out.initFollowingTokens(static_cast<unsigned>(report.following_tokens.size())),
                report.following_tokens);
    out.setFollowingPosition(report.following_position);
    out.setOffered(report.offered);
    out.setLease(lease);
    const bool has_following = !report.following_tokens.empty();
    auto tensors = out.initTensors(has_following ? 2 : 1);
    std::vector<zmq::message_t> payload;
    // In a lease the KV never crosses the socket: no checksum guards it.
    const auto describe = [&](unsigned i, const KvLayout& l, const Blob& kv) {
      wire::DescribeKvTensor(tensors[i], l, lease != 0 ? 0 : Checksum64(kv.span()));
      if (lease == 0) payload.push_back(wire::BlobFrame(kv));
    };
    describe(0, layout, report.placeholder_kv);
    if (has_following) describe(1, following, report.following_kv);
    return payload;
  });
  return Guarded([&]() -> Status {
    return response.reply().isReportActual() ? Status::Ok() : Unexpected("ReportActual");
  });
}

Result<bool> Client::OfferAnchor(const AnchorOffer& offer) {
  KVCOMM_CALL(response, [&](proto::Request::Builder request) {
    auto out = request.initOfferAnchor();
    out.setAgent(offer.agent);
    out.setSlot(offer.slot);
    WriteReuseModel(out.initModel(), offer.model);
    WriteTokens(out.initPlaceholderTokens(static_cast<unsigned>(offer.placeholder_tokens.size())),
                offer.placeholder_tokens);
    return std::vector<zmq::message_t>{};
  });
  return Guarded([&]() -> Result<bool> {
    if (!response.reply().isOfferAnchor()) return Unexpected("OfferAnchor");
    return response.reply().getOfferAnchor();
  });
}

Status Client::ReportCheck(const CheckReport& report) {
  KVCOMM_CALL(response, [&](proto::Request::Builder request) {
    auto out = request.initReportCheck();
    out.setAgent(report.agent);
    auto slots = out.initSlots(static_cast<unsigned>(report.slots.size()));
    for (unsigned i = 0; i < slots.size(); ++i) slots.set(i, report.slots[i]);
    auto blamed = out.initBlamedSlots(static_cast<unsigned>(report.blamed_slots.size()));
    for (unsigned i = 0; i < blamed.size(); ++i) blamed.set(i, report.blamed_slots[i]);
    out.setReplyChanged(report.reply_changed);
    out.setNextTokenKl(report.next_token_kl);
    return std::vector<zmq::message_t>{};
  });
  return Guarded([&]() -> Status {
    return response.reply().isReportCheck() ? Status::Ok() : Unexpected("ReportCheck");
  });
}

Result<std::vector<AnchorSlotInfo>> Client::ListAnchors() {
  KVCOMM_CALL(response, [](proto::Request::Builder request) {
    request.setListAnchors();
    return std::vector<zmq::message_t>{};
  });
  return Guarded([&]() -> Result<std::vector<AnchorSlotInfo>> {
    if (!response.reply().isAnchors()) return Unexpected("ListAnchors");
    std::vector<AnchorSlotInfo> out;
    for (auto slot : response.reply().getAnchors().getSlots()) {
      AnchorSlotInfo info{slot.getSlot().cStr(), {}};
      for (auto a : slot.getAnchors()) {
        AnchorInfo anchor{wire::ReadKey(a.getBaseKey()), a.getTokens(), a.getActivations(), {}};
        for (auto agent : a.getAgents()) anchor.agents.emplace_back(agent.cStr());
        info.anchors.push_back(std::move(anchor));
      }
      out.push_back(std::move(info));
    }
    return out;
  });
}

}  // namespace kvcomm::client
