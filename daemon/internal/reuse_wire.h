// Wire conversions of the KVCOMM reuse requests (PlanPrompt, ReportActual, OfferAnchor,
// ReportCheck, ListAnchors and the reuse counters of Stats). Readers validate everything that
// arrives; daemon-only.
#pragma once

#include <vector>
#include <zmq.hpp>

#include "daemon/anchor_service.h"
#include "schemas/kvcomm.capnp.h"

namespace kvcomm::daemon::internal {

Result<PlanInput> ReadPlanInput(proto::PlanPrompt::Reader plan);
// `frames[0]` is the Cap'n Proto frame; the KV frames follow, or the KV is in a lease of
// `leases` (nullptr: kvcommd lends none), released here.
Result<ActualInput> ReadActualInput(proto::ReportActual::Reader report,
                                    std::vector<zmq::message_t>& frames, DeviceLeases* leases);
Result<OfferInput> ReadOfferInput(proto::OfferAnchor::Reader offer);
Result<CheckInput> ReadCheckInput(proto::ReportCheck::Reader report);
// `leases`: set for device delivery (the reply then names the arena).
void FillPlanResult(proto::PlanResult::Builder out, PromptPlanOutput& plan,
                    const DeviceLeases* leases, std::vector<zmq::message_t>& payload_out);
void FillArena(proto::DeviceArena::Builder out, const DeviceLeases& leases);
void FillAnchorListing(proto::AnchorListing::Builder out, const std::vector<SlotListing>& slots);
void FillReuseCounters(capnp::List<proto::ReuseCounter>::Builder out,
                       const std::vector<ReuseCounter>& counters);

}  // namespace kvcomm::daemon::internal
