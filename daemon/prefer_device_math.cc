#include "daemon/prefer_device_math.h"

#include <algorithm>

#include "kernels/device.h"

namespace kvcomm::daemon {
namespace {

bool OnGpu(const MathKv& kv) { return kv.host == nullptr; }
bool AllOnGpu(const std::vector<MathKv>& kvs) { return std::all_of(kvs.begin(), kvs.end(), OnGpu); }

// A GPU segment's values as the host path holds them (fp32).
Result<MathKv> OnHost(const MathKv& kv) {
  if (!OnGpu(kv)) return kv;
  KVCOMM_ASSIGN_OR_RETURN(Blob bytes,
                          kernels::CopyDeviceToBlob(kv.device.data(), kv.layout.PayloadBytes()));
  KVCOMM_ASSIGN_OR_RETURN(auto decoded, DecodeKv(kv.layout, bytes.span()));
  MathKv out{decoded.layout, kv.first_position};
  out.host = std::make_shared<const KvF32>(std::move(decoded));
  return out;
}
Result<std::vector<MathKv>> OnHost(const std::vector<MathKv>& kvs) {
  std::vector<MathKv> out;
  for (const auto& kv : kvs) {
    KVCOMM_ASSIGN_OR_RETURN(auto host, OnHost(kv));
    out.push_back(std::move(host));
  }
  return out;
}

}  // namespace

Result<std::optional<MathKv>> PreferDeviceMath::Load(const kvstore::Scope& scope,
                                                     const SegmentKey& key,
                                                     const KvLayout& geometry) {
  auto on_device = device_.Load(scope, key, geometry);
  if (!on_device.ok() && (on_device.status().code() == ErrorCode::kFailedPrecondition ||
                          on_device.status().code() == ErrorCode::kResourceExhausted))
    return host_.Load(scope, key, geometry);
  return on_device;
}

Result<std::optional<PlannedKv>> PreferDeviceMath::Exact(const kvstore::Scope& scope,
                                                         const SegmentKey& key,
                                                         const KvLayout& geometry) {
  return host_.Exact(scope, key, geometry);  // no arithmetic: the stored bytes, one copy
}

Result<ReuseDecision> PreferDeviceMath::Decide(const MathKv& placeholder,
                                               const std::vector<MathKv>& anchors,
                                               const AnchorPoolConfig& config) {
  if (OnGpu(placeholder) && AllOnGpu(anchors)) return device_.Decide(placeholder, anchors, config);
  KVCOMM_ASSIGN_OR_RETURN(auto host_placeholder, OnHost(placeholder));
  KVCOMM_ASSIGN_OR_RETURN(auto host_anchors, OnHost(anchors));
  return host_.Decide(host_placeholder, host_anchors, config);
}

Result<PlannedKv> PreferDeviceMath::BlendPlaceholder(const PlaceholderBlendInput& in,
                                                     std::span<const float> inv_freq,
                                                     double temperature, DType dtype) {
  if (OnGpu(in.base) && AllOnGpu(in.anchor_bases) && AllOnGpu(in.deltas))
    return CopiedOut(device_.BlendPlaceholder(in, inv_freq, temperature, dtype));
  KVCOMM_ASSIGN_OR_RETURN(auto base, OnHost(in.base));
  KVCOMM_ASSIGN_OR_RETURN(auto anchor_bases, OnHost(in.anchor_bases));
  KVCOMM_ASSIGN_OR_RETURN(auto deltas, OnHost(in.deltas));
  return host_.BlendPlaceholder(
      {base, anchor_bases, in.token_sums, deltas, in.base_position, in.position}, inv_freq,
      temperature, dtype);
}

Result<PlannedKv> PreferDeviceMath::BlendFollowing(const FollowingBlendInput& in,
                                                   std::span<const float> inv_freq,
                                                   double temperature, DType dtype) {
  if (OnGpu(in.base) && OnGpu(in.placeholder_base) && AllOnGpu(in.anchor_bases) &&
      AllOnGpu(in.deltas))
    return CopiedOut(device_.BlendFollowing(in, inv_freq, temperature, dtype));
  KVCOMM_ASSIGN_OR_RETURN(auto base, OnHost(in.base));
  KVCOMM_ASSIGN_OR_RETURN(auto placeholder_base, OnHost(in.placeholder_base));
  KVCOMM_ASSIGN_OR_RETURN(auto anchor_bases, OnHost(in.anchor_bases));
  KVCOMM_ASSIGN_OR_RETURN(auto deltas, OnHost(in.deltas));
  return host_.BlendFollowing({base, placeholder_base, anchor_bases, deltas, in.position}, inv_freq,
                              temperature, dtype);
}

Status PreferDeviceMath::PutDeviation(const DeviationInput& in) {
  if (OnGpu(in.base)) return device_.PutDeviation(in);
  return host_.PutDeviation(in);
}

Result<PlannedKv> PreferDeviceMath::CopiedOut(Result<PlannedKv> leased) {
  if (!leased.ok()) return leased.status();
  const DeviceLeases::Lease lease = *leased->lease;
  auto copied = kernels::CopyDeviceToBlob(lease.data, lease.bytes);
  KVCOMM_RETURN_IF_ERROR(leases_.Release(lease.id));
  KVCOMM_ASSIGN_OR_RETURN(Blob bytes, std::move(copied));
  return PlannedKv{leased->layout, std::move(bytes), {}};
}

}  // namespace kvcomm::daemon
