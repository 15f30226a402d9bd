#include "daemon/internal/anchor_keys.h"

namespace kvcomm::daemon::internal {
namespace {

Hash128 TokensHash(std::span<const int32_t> tokens) {
  Hasher128 h;
  for (int32_t t : tokens) h.AddU64(static_cast<uint32_t>(t));
  return h.Finish();
}

SegmentKey DerivedKey(const kvstore::Scope& scope, std::string_view kind, std::string_view slot,
                      const Hash128& anchor_base, std::string_view agent,
                      const Hash128& segment_tokens) {
  return Hasher128()
      .AddString("kvcomm.anchor-service")
      .AddString(kind)
      .AddHash(*scope.model)
      .AddString(scope.name_space)
      .AddString(slot)
      .AddHash(anchor_base)
      .AddString(agent)
      .AddHash(segment_tokens)
      .Finish();
}

}  // namespace

SegmentKey DeltaKey(const kvstore::Scope& scope, std::string_view slot, const Hash128& base,
                    std::string_view agent) {
  return DerivedKey(scope, "placeholder-delta", slot, base, agent, {});
}
SegmentKey FollowingDeltaKey(const kvstore::Scope& scope, std::string_view slot,
                             const Hash128& base, std::string_view agent,
                             std::span<const int32_t> following) {
  return DerivedKey(scope, "following-delta", slot, base, agent, TokensHash(following));
}
SegmentKey FollowingBaseKey(const kvstore::Scope& scope, std::string_view slot,
                            std::string_view agent, std::span<const int32_t> following) {
  return DerivedKey(scope, "following-base", slot, {}, agent, TokensHash(following));
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace kvcomm::daemon::internal
