// Where the anchor service's KV arithmetic runs. HostMath decodes segments to fp32 on the host
// and hands KV back as bytes for the socket (the reference, and the only path without a GPU).
// DeviceMath works on the bf16 segments of the GPU tier in place and writes each answer into a
// lease of the IPC arena (daemon/device_leases.h), so KV never crosses the host. Both take the
// same decisions from the same definitions (daemon/anchor_pool.h, kernels/realign.h).
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "daemon/anchor_kv.h"
#include "daemon/anchor_pool.h"
#include "daemon/device_leases.h"
#include "kernels/device_realign.h"
#include "kvstore/store.h"

namespace kvcomm::daemon {

// A stored segment as a backend holds it: fp32 on the host, or device bytes of the GPU tier.
struct MathKv {
  KvLayout layout;
  int32_t first_position = 0;
  std::shared_ptr<const KvF32> host{};
  kvstore::DeviceBytes device{};
};

// One segment's KV for the agent: bytes for the socket, or a lease holding it.
struct PlannedKv {
  KvLayout layout;
  Blob kv{};
  std::optional<DeviceLeases::Lease> lease{};
  uint64_t bytes() const { return lease ? lease->bytes : kv.size(); }
};

// A placeholder: base(P) re-rotated from `base_position` to `position` plus the anchors' deltas
// blended per token.
struct PlaceholderBlendInput {
  const MathKv& base;
  const std::vector<MathKv>& anchor_bases;
  std::span<const float> token_sums;  // the reuse decision's, or empty: computed here
  const std::vector<MathKv>& deltas;  // one per anchor, at least the placeholder's tokens long
  int32_t base_position, position;
};
// The template segment after a placeholder: the agent's cached copy re-rotated to `position`
// plus the anchors' deltas blended per channel, with weights from the placeholder's bases.
struct FollowingBlendInput {
  const MathKv& base;
  const MathKv& placeholder_base;
  const std::vector<MathKv>& anchor_bases;  // of the placeholder, one per delta
  const std::vector<MathKv>& deltas;
  int32_t position;
};

// An anchor's deviation for one agent (../shared/KVCOMM.md, "Anchors"): the KV an agent
// reported, `actual` (in `layout`, the model's dtype; token t at actual_position + t), minus
// `base` (token t at base_position + t), both made position-free (kernels/realign.h's
// PositionFreeDifference). Stored under `key` as a derived segment (first position 0).
struct DeviationInput {
  const kvstore::Scope& scope;
  SegmentKey key;
  KvLayout layout;
  std::span<const std::byte> actual;
  int32_t actual_position;
  const MathKv& base;
  int32_t base_position;
  std::span<const float> inv_freq;
};

// The metadata of a segment the anchor service derives (a delta, a template segment's base):
// keyed by `key` only, never by tokens, so it is never served as a prompt's KV.
kvstore::SegmentMeta DerivedMeta(const kvstore::Scope& scope, const SegmentKey& key,
                                 const KvLayout& layout, int32_t first_position);

class ReuseMath {
 public:
  virtual ~ReuseMath() = default;
  // The stored segment, checked against the model's KV geometry; nullopt if absent.
  virtual Result<std::optional<MathKv>> Load(const kvstore::Scope& scope, const SegmentKey& key,
                                             const KvLayout& geometry) = 0;
  // An exact hit's KV in geometry.dtype; nullopt if absent.
  virtual Result<std::optional<PlannedKv>> Exact(const kvstore::Scope& scope, const SegmentKey& key,
                                                 const KvLayout& geometry) = 0;
  virtual Result<ReuseDecision> Decide(const MathKv& placeholder,
                                       const std::vector<MathKv>& anchors,
                                       const AnchorPoolConfig& config) = 0;
  virtual Result<PlannedKv> BlendPlaceholder(const PlaceholderBlendInput& in,
                                             std::span<const float> inv_freq, double temperature,
                                             DType dtype) = 0;
  virtual Result<PlannedKv> BlendFollowing(const FollowingBlendInput& in,
                                           std::span<const float> inv_freq, double temperature,
                                           DType dtype) = 0;
  virtual Status PutDeviation(const DeviationInput& in) = 0;
};

class HostMath final : public ReuseMath {
 public:
  explicit HostMath(kvstore::TieredStore& store) : store_(store) {}
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
  kvstore::TieredStore& store_;
};

// Needs a store with a GPU tier, a lease arena, and bf16 segments with head_dim % 16 == 0.
// Thread-safe: one mutex serialises the device work (it shares one stream and workspace).
class DeviceMath final : public ReuseMath {
 public:
  DeviceMath(kvstore::TieredStore& store, DeviceLeases& leases) : store_(store), leases_(leases) {}
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
  // The reported KV goes up to the GPU once; the deviation is computed and placed in the GPU
  // tier there (its checksum from one copy down).
  Status PutDeviation(const DeviationInput& in) override;

 private:
  // `base` realigned with the weights set last, into a new lease; mutex_ held.
  Result<PlannedKv> Realigned(const kernels::RealignShape& shape, const MathKv& base,
                              int32_t base_position, int32_t position,
                              std::span<const float> inv_freq, const std::vector<MathKv>& deltas);

  kvstore::TieredStore& store_;
  DeviceLeases& leases_;
  std::mutex mutex_;
  kernels::DeviceRealigner realigner_;
  // PutDeviation's buffers, grown to the largest report: what the agent sent, the deviation,
  // and the deviation's host copy (pinned: copied at full bus speed).
  kernels::DeviceBuffer reported_, deviation_;
  kernels::PinnedHostBuffer deviation_host_;
};

// The positions first .. first + count - 1.
std::vector<int32_t> Positions(int32_t first, size_t count);

}  // namespace kvcomm::daemon
