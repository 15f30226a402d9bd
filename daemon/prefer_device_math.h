// The anchor service's arithmetic for answers that leave kvcommd as host bytes (frames plans,
// and the deviations of reports) when kvcommd has a GPU for the model's KV: at 8B sizes the
// host needs seconds per plan, the GPU milliseconds. Work runs on the GPU whenever every
// segment it reads could be used there in place, and its answer is copied out of its lease;
// exact hits, and anything touching a segment the GPU cannot use in place (stored in another
// dtype, or not placeable in the GPU tier), go through the host path, so frames serve
// everything a host-only kvcommd serves.
#pragma once

#include "daemon/reuse_math.h"

namespace kvcomm::daemon {

class PreferDeviceMath final : public ReuseMath {
 public:
  PreferDeviceMath(HostMath& host, DeviceMath& device, DeviceLeases& leases)
      : host_(host), device_(device), leases_(leases) {}
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
  Status PutDeviation(const DeviationInput& in) override;

 private:
  // A device answer's bytes, its lease given back.
  Result<PlannedKv> CopiedOut(Result<PlannedKv> leased);

  HostMath& host_;
  DeviceMath& device_;
  DeviceLeases& leases_;
};

}  // namespace kvcomm::daemon
