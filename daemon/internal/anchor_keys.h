// Keys of the segments the anchor service writes (deltas, template segments' bases), and its
// timing helper; shared by the service's files, daemon-only. Derived keys never collide with
// token-derived keys, so a delta is never served as a placeholder's KV.
#pragma once

#include <chrono>
#include <span>
#include <string_view>

#include "common/keys.h"
#include "kvstore/store.h"

namespace kvcomm::daemon::internal {

SegmentKey DeltaKey(const kvstore::Scope& scope, std::string_view slot, const Hash128& base,
                    std::string_view agent);
SegmentKey FollowingDeltaKey(const kvstore::Scope& scope, std::string_view slot,
                             const Hash128& base, std::string_view agent,
                             std::span<const int32_t> following);
SegmentKey FollowingBaseKey(const kvstore::Scope& scope, std::string_view slot,
                            std::string_view agent, std::span<const int32_t> following);

double SecondsSince(std::chrono::steady_clock::time_point start);

}  // namespace kvcomm::daemon::internal
