// Conversions between wire structs and kvstore / daemon types (daemon-only).
#pragma once

#include "daemon/counters.h"
#include "kvstore/store.h"
#include "schemas/kvcomm.capnp.h"

namespace kvcomm::daemon::internal {

Result<kvstore::KeyKind> ReadKeyKind(proto::KeyKind kind);
void FillSegmentInfo(proto::SegmentInfo::Builder out, const kvstore::SegmentMeta& meta,
                     kvstore::TierKind tier);
void FillStats(proto::StatsResult::Builder out, const kvstore::StoreStats& store,
               const DaemonCounters& counters, uint64_t sessions);

}  // namespace kvcomm::daemon::internal
