#include "daemon/timed_math.h"

#include <chrono>

namespace kvcomm::daemon {
namespace {

// Runs `work`, adding its wall time to `total` and one to `count`.
template <typename Work>
auto Timed(double& total, int& count, Work&& work) {
  const auto start = std::chrono::steady_clock::now();
  auto result = work();
  total += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++count;
  return result;
}

}  // namespace

Result<std::optional<MathKv>> TimedMath::Load(const kvstore::Scope& scope, const SegmentKey& key,
                                              const KvLayout& geometry) {
  return Timed(seconds_.load, seconds_.loads, [&] { return inner_.Load(scope, key, geometry); });
}

Result<std::optional<PlannedKv>> TimedMath::Exact(const kvstore::Scope& scope,
                                                  const SegmentKey& key, const KvLayout& geometry) {
  return Timed(seconds_.exact, seconds_.exacts, [&] { return inner_.Exact(scope, key, geometry); });
}

Result<ReuseDecision> TimedMath::Decide(const MathKv& placeholder,
                                        const std::vector<MathKv>& anchors,
                                        const AnchorPoolConfig& config) {
  return Timed(seconds_.decide, seconds_.decides,
               [&] { return inner_.Decide(placeholder, anchors, config); });
}

Result<PlannedKv> TimedMath::BlendPlaceholder(const PlaceholderBlendInput& in,
                                              std::span<const float> inv_freq, double temperature,
                                              DType dtype) {
  return Timed(seconds_.blend, seconds_.blends,
               [&] { return inner_.BlendPlaceholder(in, inv_freq, temperature, dtype); });
}

Result<PlannedKv> TimedMath::BlendFollowing(const FollowingBlendInput& in,
                                            std::span<const float> inv_freq, double temperature,
                                            DType dtype) {
  return Timed(seconds_.blend, seconds_.blends,
               [&] { return inner_.BlendFollowing(in, inv_freq, temperature, dtype); });
}

}  // namespace kvcomm::daemon
