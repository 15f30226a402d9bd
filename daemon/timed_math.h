// A ReuseMath that times the one it wraps, per kind of work, for the plan's debug log: where a
// plan's milliseconds go (store loads, exact copies, reuse decisions, blends). Every backend
// returns once its work is done (device work is synchronised), so wall time is the work's.
#pragma once

#include "daemon/reuse_math.h"

namespace kvcomm::daemon {

class TimedMath final : public ReuseMath {
 public:
  struct Seconds {
    double load = 0, exact = 0, decide = 0, blend = 0;
    int loads = 0, exacts = 0, decides = 0, blends = 0;
  };

  explicit TimedMath(ReuseMath& inner) : inner_(inner) {}
  const Seconds& seconds() const { return seconds_; }

  Result<std::optional<MathKv>> Load(const kvstore::Scope& scope, const SegmentKey& key,
                                     const KvLayout& geometry) override;
  Result<std::optional<PlannedKv>> Exact(const kvstore::Scope& scope, const SegmentKey& key,
                                         const KvLayout& geometry) override;
  Result<ReuseDecision> Decide(const MathKv& placeholder, const std::vector<MathKv>& anchors,
                               const AnchorPoolConfig& config) override;
  Result<PlannedKv> BlendPlaceholder(const PlaceholderBlendInput& in,
                                     std::span<const float> inv_freq, double temperature,
                                     DType dtype) override;
  Result<PlannedKv> BlendFollowing(const FollowingBlendInput& in, std::span<const float> inv_freq,
                                   double temperature, DType dtype) override;
  Status PutDeviation(const DeviationInput& in) override { return inner_.PutDeviation(in); }

 private:
  ReuseMath& inner_;
  Seconds seconds_;
};

}  // namespace kvcomm::daemon
