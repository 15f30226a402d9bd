#include "daemon/reuse_math.h"

#include <numeric>

#include "common/hash.h"
#include "kernels/device.h"
#include "kernels/realign.h"

namespace kvcomm::daemon {
namespace {

Status CheckGeometry(const SegmentKey& key, const KvLayout& stored, const KvLayout& geometry) {
  if (stored.num_layers != geometry.num_layers || stored.kv_heads != geometry.kv_heads ||
      stored.head_dim != geometry.head_dim) {
    return InvalidArgument("stored segment {} has KV shape {}, the request's model has {}",
                           key.ToHex(), stored.ToString(), geometry.ToString());
  }
  return Status::Ok();
}

KvView View(const MathKv& kv) { return {kv.host->data.data(), kv.host->layout}; }
std::vector<KvView> Views(const std::vector<MathKv>& kvs) {
  std::vector<KvView> views;
  for (const auto& kv : kvs) views.push_back(View(kv));
  return views;
}

KvLayout WithDType(KvLayout layout, DType dtype) {
  layout.dtype = dtype;
  return layout;
}

kernels::RealignShape ShapeOf(const KvLayout& l, size_t anchors) {
  return {l.num_layers, l.kv_heads, l.tokens, l.head_dim, static_cast<int64_t>(anchors)};
}

// Where a segment is looked up: Get for the host, GetOnDevice for the GPU tier.
template <typename Segment>
Result<std::optional<Segment>> Found(Result<Segment> segment, const SegmentKey& key,
                                     const KvLayout& geometry) {
  if (!segment.ok()) {
    if (segment.status().code() == ErrorCode::kNotFound) return std::optional<Segment>();
    return segment.status();
  }
  KVCOMM_RETURN_IF_ERROR(CheckGeometry(key, segment->meta.layout, geometry));
  return std::optional<Segment>(std::move(*segment));
}

}  // namespace

kvstore::SegmentMeta DerivedMeta(const kvstore::Scope& scope, const SegmentKey& key,
                                 const KvLayout& layout, int32_t first_position) {
  kvstore::SegmentMeta meta;
  meta.context_key = key;
  meta.content_key = Hasher128().AddString("kvcomm.derived-content").AddHash(key).Finish();
  meta.fingerprint = *scope.model;
  meta.name_space = scope.name_space;
  meta.layout = layout;
  meta.first_position = first_position;
  meta.payload_bytes = layout.PayloadBytes();
  return meta;
}

std::vector<int32_t> Positions(int32_t first, size_t count) {
  std::vector<int32_t> out(count);
  std::iota(out.begin(), out.end(), first);
  return out;
}

// ---- host ----

Status HostMath::PutDeviation(const DeviationInput& in) {
  const KvF32& base = *in.base.host;
  if (base.layout.tokens != in.layout.tokens)
    return Error(ErrorCode::kDataLoss, "a base of {} tokens for a report of {}", base.layout.tokens,
                 in.layout.tokens);
  KVCOMM_ASSIGN_OR_RETURN(auto actual, DecodeKv(in.layout, in.actual));
  KvF32 deviation{actual.layout, std::vector<float>(actual.data.size())};
  kernels::cpu::PositionFreeDifference(ShapeOf(in.layout, 0), actual.data.data(),
                                       in.actual_position, base.data.data(), in.base_position,
                                       in.inv_freq, deviation.data.data());
  KVCOMM_ASSIGN_OR_RETURN(Blob payload, EncodeKv(deviation, in.layout.dtype));
  kvstore::SegmentMeta meta = DerivedMeta(in.scope, in.key, in.layout, 0);
  meta.checksum = Checksum64(payload.span());
  return store_.Put(std::move(meta), std::move(payload)).status();
}

Result<std::optional<MathKv>> HostMath::Load(const kvstore::Scope& scope, const SegmentKey& key,
                                             const KvLayout& geometry) {
  KVCOMM_ASSIGN_OR_RETURN(auto segment,
                          Found(store_.Get(key, kvstore::KeyKind::kContext, scope), key, geometry));
  if (!segment) return std::optional<MathKv>();
  KVCOMM_ASSIGN_OR_RETURN(auto kv, DecodeKv(segment->meta.layout, segment->payload.span()));
  MathKv out{kv.layout, segment->meta.first_position};
  out.host = std::make_shared<const KvF32>(std::move(kv));
  return std::optional<MathKv>(std::move(out));
}

Result<std::optional<PlannedKv>> HostMath::Exact(const kvstore::Scope& scope, const SegmentKey& key,
                                                 const KvLayout& geometry) {
  KVCOMM_ASSIGN_OR_RETURN(auto segment,
                          Found(store_.Get(key, kvstore::KeyKind::kContext, scope), key, geometry));
  if (!segment) return std::optional<PlannedKv>();
  const KvLayout& stored = segment->meta.layout;
  PlannedKv out{WithDType(stored, geometry.dtype)};
  if (stored.dtype == geometry.dtype) {
    out.kv = segment->payload;  // as stored, without a copy
  } else {
    KVCOMM_ASSIGN_OR_RETURN(auto kv, DecodeKv(stored, segment->payload.span()));
    KVCOMM_ASSIGN_OR_RETURN(out.kv, EncodeKv(kv, geometry.dtype));
  }
  return std::optional<PlannedKv>(std::move(out));
}

Result<ReuseDecision> HostMath::Decide(const MathKv& placeholder,
                                       const std::vector<MathKv>& anchors,
                                       const AnchorPoolConfig& config) {
  return DecideReuse(View(placeholder), Views(anchors), config);
}

Result<PlannedKv> HostMath::BlendPlaceholder(const PlaceholderBlendInput& in,
                                             std::span<const float> inv_freq, double temperature,
                                             DType dtype) {
  const KvF32& base = *in.base.host;
  const uint32_t tokens = base.layout.tokens;
  const std::vector<KvView> views = Views(in.anchor_bases);
  const BlendWeights weights =
      in.token_sums.empty()
          ? PlaceholderWeights(View(in.base), views, temperature)
          : PlaceholderWeights(in.token_sums, views.size(), base.layout, temperature);
  std::vector<float> deltas;
  for (const auto& delta : in.deltas) {
    const KvF32 first = FirstTokens(*delta.host, tokens);
    deltas.insert(deltas.end(), first.data.begin(), first.data.end());
  }
  KvF32 realigned{base.layout, std::vector<float>(base.data.size())};
  kernels::cpu::RealignKv(ShapeOf(base.layout, in.deltas.size()), base.data.data(),
                          Positions(in.base_position, tokens), Positions(in.position, tokens),
                          inv_freq, deltas.data(), weights.key.data(), weights.value.data(),
                          realigned.data.data());
  PlannedKv out{WithDType(base.layout, dtype)};
  KVCOMM_ASSIGN_OR_RETURN(out.kv, EncodeKv(realigned, dtype));
  return out;
}

Result<PlannedKv> HostMath::BlendFollowing(const FollowingBlendInput& in,
                                           std::span<const float> inv_freq, double temperature,
                                           DType dtype) {
  const KvF32& base = *in.base.host;
  const std::vector<float> weights =
      FollowingSegmentWeights(View(in.placeholder_base), Views(in.anchor_bases), temperature);
  std::vector<float> deltas;
  for (const auto& delta : in.deltas)
    deltas.insert(deltas.end(), delta.host->data.begin(), delta.host->data.end());
  kernels::RealignShape shape = ShapeOf(base.layout, in.deltas.size());
  shape.per_channel_weights = true;
  KvF32 realigned{base.layout, std::vector<float>(base.data.size())};
  kernels::cpu::RealignKv(shape, base.data.data(),
                          Positions(in.base.first_position, base.layout.tokens),
                          Positions(in.position, base.layout.tokens), inv_freq, deltas.data(),
                          weights.data(), weights.data(), realigned.data.data());
  PlannedKv out{WithDType(base.layout, dtype)};
  KVCOMM_ASSIGN_OR_RETURN(out.kv, EncodeKv(realigned, dtype));
  return out;
}

// ---- device ----

namespace {

Status NeedsBf16(const SegmentKey& key, const KvLayout& layout) {
  if (layout.dtype != DType::kBF16)
    return Error(ErrorCode::kFailedPrecondition,
                 "device delivery works on bf16 segments; segment {} is {}", key.ToHex(),
                 DTypeName(layout.dtype));
  return Status::Ok();
}

}  // namespace

Result<std::optional<MathKv>> DeviceMath::Load(const kvstore::Scope& scope, const SegmentKey& key,
                                               const KvLayout& geometry) {
  KVCOMM_ASSIGN_OR_RETURN(
      auto segment,
      Found(store_.GetOnDevice(key, kvstore::KeyKind::kContext, scope), key, geometry));
  if (!segment) return std::optional<MathKv>();
  KVCOMM_RETURN_IF_ERROR(NeedsBf16(key, segment->meta.layout));
  MathKv out{segment->meta.layout, segment->meta.first_position};
  out.device = std::move(segment->payload);
  return std::optional<MathKv>(std::move(out));
}

Result<std::optional<PlannedKv>> DeviceMath::Exact(const kvstore::Scope& scope,
                                                   const SegmentKey& key,
                                                   const KvLayout& geometry) {
  KVCOMM_ASSIGN_OR_RETURN(auto kv, Load(scope, key, geometry));
  if (!kv) return std::optional<PlannedKv>();
  KVCOMM_ASSIGN_OR_RETURN(auto lease, leases_.Acquire(kv->layout.PayloadBytes()));
  Status copied = kernels::CopyDeviceToDevice(lease.data, kv->device.data(), lease.bytes);
  if (!copied.ok()) {
    (void)leases_.Release(lease.id);
    return copied;
  }
  return std::optional<PlannedKv>(PlannedKv{kv->layout, {}, lease});
}

namespace {

std::vector<kernels::DeviceSegmentRef> Refs(const std::vector<MathKv>& segments) {
  std::vector<kernels::DeviceSegmentRef> refs;
  for (const auto& s : segments) refs.push_back({s.device.data(), s.layout.tokens});
  return refs;
}

}  // namespace

Result<ReuseDecision> DeviceMath::Decide(const MathKv& placeholder,
                                         const std::vector<MathKv>& anchors,
                                         const AnchorPoolConfig& config) {
  const uint32_t tokens = placeholder.layout.tokens;
  std::vector<size_t> candidates;
  std::vector<MathKv> long_enough;
  for (size_t i = 0; i < anchors.size(); ++i) {
    if (anchors[i].layout.tokens < tokens) continue;
    candidates.push_back(i);
    long_enough.push_back(anchors[i]);
  }
  if (candidates.size() < 2) return ReuseDecision{};
  const kernels::RealignShape shape = ShapeOf(placeholder.layout, candidates.size());
  std::vector<float> sums(candidates.size() * tokens * 3);
  std::lock_guard lock(mutex_);
  KVCOMM_RETURN_IF_ERROR(
      realigner_.TokenSums(shape, placeholder.device.data(), Refs(long_enough), sums));
  KVCOMM_ASSIGN_OR_RETURN(double norm,
                          realigner_.ValueSquaredNorm(shape, placeholder.device.data()));
  return DecideReuseFromSums(std::move(sums), candidates, tokens, norm, config);
}

Result<PlannedKv> DeviceMath::Realigned(const kernels::RealignShape& shape, const MathKv& base,
                                        int32_t base_position, int32_t position,
                                        std::span<const float> inv_freq,
                                        const std::vector<MathKv>& deltas) {
  KVCOMM_ASSIGN_OR_RETURN(auto lease, leases_.Acquire(base.layout.PayloadBytes()));
  Status done = realigner_.Realign(
      shape, base.device.data(), Positions(base_position, base.layout.tokens),
      Positions(position, base.layout.tokens), inv_freq, Refs(deltas), lease.data);
  if (!done.ok()) {
    (void)leases_.Release(lease.id);
    return done;
  }
  return PlannedKv{base.layout, {}, lease};
}

Status DeviceMath::PutDeviation(const DeviationInput& in) {
  assert(in.layout.dtype == DType::kBF16);  // ReportActual takes device math for bf16 only
  if (in.base.layout.tokens != in.layout.tokens)
    return Error(ErrorCode::kDataLoss, "a base of {} tokens for a report of {}",
                 in.base.layout.tokens, in.layout.tokens);
  const size_t bytes = in.layout.PayloadBytes();
  if (in.actual.size() != bytes)
    return InvalidArgument("reported KV is {} bytes, layout {} needs {}", in.actual.size(),
                           in.layout.ToString(), bytes);
  std::lock_guard lock(mutex_);
  KVCOMM_ASSIGN_OR_RETURN(std::byte * reported, reported_.Reserve(bytes));
  KVCOMM_ASSIGN_OR_RETURN(std::byte * deviation, deviation_.Reserve(bytes));
  KVCOMM_ASSIGN_OR_RETURN(std::byte * host, deviation_host_.Reserve(bytes));
  KVCOMM_RETURN_IF_ERROR(kernels::CopyHostToDevice(reported, in.actual.data(), bytes));
  KVCOMM_RETURN_IF_ERROR(realigner_.PositionFreeDifference(
      ShapeOf(in.layout, 0), reported, in.actual_position, in.base.device.data(), in.base_position,
      in.inv_freq, deviation));
  KVCOMM_RETURN_IF_ERROR(kernels::CopyDeviceToHost(host, deviation, bytes));
  const std::span<const std::byte> host_bytes(host, bytes);
  kvstore::SegmentMeta meta = DerivedMeta(in.scope, in.key, in.layout, 0);
  meta.checksum = Checksum64(host_bytes);
  return store_
      .PutFromDevice(
          std::move(meta), deviation,
          [&]() -> Result<Blob> {
            return Blob::FromVector(std::vector<std::byte>(host_bytes.begin(), host_bytes.end()));
          })
      .status();
}

Result<PlannedKv> DeviceMath::BlendPlaceholder(const PlaceholderBlendInput& in,
                                               std::span<const float> inv_freq, double temperature,
                                               [[maybe_unused]] DType dtype) {
  const KvLayout& layout = in.base.layout;
  assert(dtype == DType::kBF16);  // AnchorService::Plan refuses other device plans
  assert(in.anchor_bases.size() == in.deltas.size());
  const kernels::RealignShape shape = ShapeOf(layout, in.deltas.size());
  std::lock_guard lock(mutex_);
  std::vector<float> sums(in.token_sums.begin(), in.token_sums.end());
  if (sums.empty()) {
    sums.resize(in.anchor_bases.size() * layout.tokens * 3);
    KVCOMM_RETURN_IF_ERROR(
        realigner_.TokenSums(shape, in.base.device.data(), Refs(in.anchor_bases), sums));
  }
  const BlendWeights weights =
      PlaceholderWeights(sums, in.anchor_bases.size(), layout, temperature);
  KVCOMM_RETURN_IF_ERROR(realigner_.SetTokenWeights(weights.key, weights.value));
  return Realigned(shape, in.base, in.base_position, in.position, inv_freq, in.deltas);
}

Result<PlannedKv> DeviceMath::BlendFollowing(const FollowingBlendInput& in,
                                             std::span<const float> inv_freq, double temperature,
                                             [[maybe_unused]] DType dtype) {
  const KvLayout& layout = in.base.layout;
  assert(dtype == DType::kBF16);  // AnchorService::Plan refuses other device plans
  const KvLayout& placeholder = in.placeholder_base.layout;
  std::lock_guard lock(mutex_);
  KVCOMM_RETURN_IF_ERROR(realigner_.SetChannelWeights(
      ShapeOf(placeholder, in.anchor_bases.size()), in.placeholder_base.device.data(),
      Refs(in.anchor_bases), static_cast<float>(temperature)));
  kernels::RealignShape shape = ShapeOf(layout, in.deltas.size());
  shape.per_channel_weights = true;
  return Realigned(shape, in.base, in.base.first_position, in.position, inv_freq, in.deltas);
}

}  // namespace kvcomm::daemon
