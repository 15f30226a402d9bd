#include "daemon/reuse_math.h"

#include <numeric>

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

std::vector<int32_t> Positions(int32_t first, size_t count) {
  std::vector<int32_t> out(count);
  std::iota(out.begin(), out.end(), first);
  return out;
}

// ---- host ----

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

Result<std::optional<PlannedKv>> HostMath::Exact(const kvstore::Scope& scope,
                                                 const SegmentKey& key, const KvLayout& geometry) {
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

Result<DeviceLeases::Lease> DeviceMath::Output(const KvLayout& layout) {
  return leases_.Acquire(layout.PayloadBytes());
}

Result<std::optional<PlannedKv>> DeviceMath::Exact(const kvstore::Scope& scope,
                                                   const SegmentKey& key,
                                                   const KvLayout& geometry) {
  KVCOMM_ASSIGN_OR_RETURN(auto kv, Load(scope, key, geometry));
  if (!kv) return std::optional<PlannedKv>();
  KVCOMM_ASSIGN_OR_RETURN(auto lease, Output(kv->layout));
  Status copied = kernels::CopyDeviceToDevice(lease.data, kv->device.data(), lease.bytes);
  if (!copied.ok()) {
    (void)leases_.Release(lease.id);
    return copied;
  }
  return std::optional<PlannedKv>(PlannedKv{kv->layout, {}, lease});
}

Result<const std::byte*> DeviceMath::Stage(const std::vector<MathKv>& segments, uint32_t tokens,
                                           kernels::DeviceScratch& scratch) {
  if (segments.empty()) return nullptr;
  KvLayout cut = segments.front().layout;
  cut.tokens = tokens;
  const uint64_t bytes = cut.PayloadBytes();
  KVCOMM_ASSIGN_OR_RETURN(std::byte * out, scratch.Reserve(bytes * segments.size()));
  for (size_t i = 0; i < segments.size(); ++i) {
    const KvLayout& l = segments[i].layout;
    assert(l.tokens >= tokens);
    KVCOMM_RETURN_IF_ERROR(kernels::CopyFirstTokens(segments[i].device.data(),
                                                    int64_t{l.num_layers} * 2 * l.kv_heads,
                                                    l.tokens, tokens, l.head_dim,
                                                    out + i * bytes));
  }
  return static_cast<const std::byte*>(out);
}

Result<ReuseDecision> DeviceMath::Decide(const MathKv& placeholder,
                                         const std::vector<MathKv>& anchors,
                                         const AnchorPoolConfig& config) {
  const uint32_t tokens = placeholder.layout.tokens;
  std::vector<size_t> candidates;
  std::vector<MathKv> cut;
  for (size_t i = 0; i < anchors.size(); ++i) {
    if (anchors[i].layout.tokens < tokens) continue;
    candidates.push_back(i);
    cut.push_back(anchors[i]);
  }
  if (candidates.size() < 2) return ReuseDecision{};
  std::lock_guard lock(mutex_);
  KVCOMM_ASSIGN_OR_RETURN(const std::byte* staged, Stage(cut, tokens, anchors_));
  const kernels::RealignShape shape = ShapeOf(placeholder.layout, cut.size());
  std::vector<float> sums(cut.size() * tokens * 3);
  KVCOMM_RETURN_IF_ERROR(realigner_.TokenSums(shape, placeholder.device.data(), staged, sums));
  KVCOMM_ASSIGN_OR_RETURN(double norm,
                          realigner_.ValueSquaredNorm(shape, placeholder.device.data()));
  return DecideReuseFromSums(std::move(sums), candidates, tokens, norm, config);
}

Result<PlannedKv> DeviceMath::BlendPlaceholder(const PlaceholderBlendInput& in,
                                               std::span<const float> inv_freq,
                                               double temperature, DType dtype) {
  const KvLayout& layout = in.base.layout;
  if (dtype != DType::kBF16) return NeedsBf16({}, WithDType(layout, dtype));
  const uint32_t tokens = layout.tokens;
  const kernels::RealignShape shape = ShapeOf(layout, in.deltas.size());
  std::lock_guard lock(mutex_);
  std::vector<float> sums(in.token_sums.begin(), in.token_sums.end());
  if (sums.empty() && !in.anchor_bases.empty()) {
    KVCOMM_ASSIGN_OR_RETURN(const std::byte* staged, Stage(in.anchor_bases, tokens, anchors_));
    sums.resize(in.anchor_bases.size() * tokens * 3);
    KVCOMM_RETURN_IF_ERROR(
        realigner_.TokenSums(ShapeOf(layout, in.anchor_bases.size()), in.base.device.data(),
                             staged, sums));
  }
  const BlendWeights weights = PlaceholderWeights(sums, in.deltas.size(), layout, temperature);
  KVCOMM_RETURN_IF_ERROR(realigner_.SetTokenWeights(weights.key, weights.value));
  KVCOMM_ASSIGN_OR_RETURN(const std::byte* deltas, Stage(in.deltas, tokens, deltas_));
  KVCOMM_ASSIGN_OR_RETURN(auto lease, Output(layout));
  Status done = realigner_.Realign(shape, in.base.device.data(), Positions(in.base_position, tokens),
                                   Positions(in.position, tokens), inv_freq, deltas, lease.data);
  if (!done.ok()) {
    (void)leases_.Release(lease.id);
    return done;
  }
  return PlannedKv{layout, {}, lease};
}

Result<PlannedKv> DeviceMath::BlendFollowing(const FollowingBlendInput& in,
                                             std::span<const float> inv_freq, double temperature,
                                             DType dtype) {
  const KvLayout& layout = in.base.layout;
  if (dtype != DType::kBF16) return NeedsBf16({}, WithDType(layout, dtype));
  const KvLayout& placeholder = in.placeholder_base.layout;
  std::lock_guard lock(mutex_);
  KVCOMM_ASSIGN_OR_RETURN(const std::byte* anchors,
                          Stage(in.anchor_bases, placeholder.tokens, anchors_));
  KVCOMM_RETURN_IF_ERROR(realigner_.SetChannelWeights(ShapeOf(placeholder, in.anchor_bases.size()),
                                                      in.placeholder_base.device.data(), anchors,
                                                      static_cast<float>(temperature)));
  KVCOMM_ASSIGN_OR_RETURN(const std::byte* deltas, Stage(in.deltas, layout.tokens, deltas_));
  kernels::RealignShape shape = ShapeOf(layout, in.deltas.size());
  shape.per_channel_weights = true;
  KVCOMM_ASSIGN_OR_RETURN(auto lease, Output(layout));
  Status done = realigner_.Realign(shape, in.base.device.data(),
                                   Positions(in.base.first_position, layout.tokens),
                                   Positions(in.position, layout.tokens), inv_freq, deltas,
                                   lease.data);
  if (!done.ok()) {
    (void)leases_.Release(lease.id);
    return done;
  }
  return PlannedKv{layout, {}, lease};
}

}  // namespace kvcomm::daemon
