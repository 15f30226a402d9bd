#include "daemon/internal/convert.h"

#include "schemas/wire.h"

namespace kvcomm::daemon::internal {

Result<kvstore::KeyKind> ReadKeyKind(proto::KeyKind kind) {
  switch (kind) {
    case proto::KeyKind::CONTEXT:
      return kvstore::KeyKind::kContext;
    case proto::KeyKind::CONTENT:
      return kvstore::KeyKind::kContent;
  }
  return InvalidArgument("unknown key kind {}", static_cast<int>(kind));
}

void FillSegmentInfo(proto::SegmentInfo::Builder out, const kvstore::SegmentMeta& meta,
                     kvstore::TierKind tier) {
  wire::WriteKey(out.initContextKey(), meta.context_key);
  wire::WriteKey(out.initContentKey(), meta.content_key);
  wire::WriteKey(out.initFingerprint(), meta.fingerprint);
  out.setNamespace(meta.name_space);
  wire::WriteShape(out.initShape(), meta.layout);
  out.setCodec(static_cast<proto::Codec>(meta.codec));
  out.setPayloadBytes(meta.payload_bytes);
  out.setChecksum(meta.checksum);
  out.setFirstPosition(meta.first_position);
  out.setCreatedUnixMs(meta.created_unix_ms);
  out.setLastAccessUnixMs(meta.last_access_unix_ms);
  out.setAccessCount(meta.access_count);
  out.setTier(static_cast<proto::Tier>(tier));
  out.setHasTokenIds(!meta.token_ids.empty());
}

void FillStats(proto::StatsResult::Builder out, const kvstore::StoreStats& store,
               const DaemonCounters& counters, uint64_t sessions) {
  auto tiers = out.initTiers(static_cast<unsigned>(store.tiers.size()));
  for (unsigned i = 0; i < tiers.size(); ++i) {
    const auto& t = store.tiers[i];
    tiers[i].setTier(static_cast<proto::Tier>(t.tier));
    tiers[i].setSegments(t.segments);
    tiers[i].setBytes(t.bytes);
    tiers[i].setCapacityBytes(t.capacity_bytes);
    tiers[i].setHits(t.hits);
    tiers[i].setMisses(t.misses);
  }
  out.setPuts(store.puts);
  out.setGets(store.gets);
  out.setPromotions(store.promotions);
  out.setDemotions(store.demotions);
  out.setEvictions(store.evictions);
  out.setCorruptRecords(store.corrupt_records);
  out.setBytesIn(counters.bytes_in());
  out.setBytesOut(counters.bytes_out());
  out.setUptimeSeconds(counters.uptime_seconds());
  out.setRequests(counters.requests());
  out.setSessions(sessions);
  std::vector<std::pair<ErrorCode, uint64_t>> errors;
  for (int code = 1; code < kNumErrorCodes; ++code) {
    uint64_t n = counters.errors(static_cast<ErrorCode>(code));
    if (n > 0) errors.emplace_back(static_cast<ErrorCode>(code), n);
  }
  auto list = out.initErrors(static_cast<unsigned>(errors.size()));
  for (unsigned i = 0; i < errors.size(); ++i) {
    list[i].setCode(static_cast<proto::ErrorCode>(errors[i].first));
    list[i].setCount(errors[i].second);
  }
}

}  // namespace kvcomm::daemon::internal
