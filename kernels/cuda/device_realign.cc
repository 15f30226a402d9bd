#include "kernels/device_realign.h"

#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launchers.h"
#include "kernels/device.h"

namespace kvcomm::kernels {
namespace {

using cuda::bf16;
const bf16* Bf16(const std::byte* p) { return reinterpret_cast<const bf16*>(p); }

// Workspace of `count` T, grown as calls need.
template <typename T>
Result<T*> Reserve(DeviceBuffer& scratch, size_t count) {
  KVCOMM_ASSIGN_OR_RETURN(std::byte * p, scratch.Reserve(count * sizeof(T)));
  return reinterpret_cast<T*>(p);
}

template <typename T>
Result<T*> Upload(DeviceBuffer& scratch, std::span<const T> values) {
  KVCOMM_ASSIGN_OR_RETURN(T * device, Reserve<T>(scratch, values.size()));
  KVCOMM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(device, values.data(), values.size_bytes(), cudaMemcpyHostToDevice, nullptr));
  return device;
}

Status Check(const RealignShape& s) {
  if (s.head_dim % 16 != 0)
    return InvalidArgument("GPU realignment needs head_dim % 16 == 0, got {}", s.head_dim);
  return Status::Ok();
}

// Up to kMaxAnchorRefs anchors from `first` on, for one launch.
Result<cuda::AnchorRefs> Refs(std::span<const DeviceSegmentRef> anchors, size_t first,
                              int64_t tokens) {
  cuda::AnchorRefs refs{};
  refs.count = static_cast<int>(std::min<size_t>(anchors.size() - first, cuda::kMaxAnchorRefs));
  for (int a = 0; a < refs.count; ++a) {
    refs.data[a] = Bf16(anchors[first + a].data);
    refs.tokens[a] = anchors[first + a].tokens;
  }
  if (!refs.Valid(tokens))
    return InvalidArgument("anchor segments must be 16-byte aligned and at least {} tokens long",
                           tokens);
  return refs;
}

}  // namespace

struct DeviceRealigner::Workspace {
  DeviceBuffer sums, norm, key_weights, value_weights, base_positions, target_positions, inv_freq;
  bool channel_weights = false;  // the key weights serve the values too
};

DeviceRealigner::DeviceRealigner() : workspace_(std::make_unique<Workspace>()) {}
DeviceRealigner::~DeviceRealigner() = default;

Status DeviceRealigner::TokenSums(const RealignShape& s, const std::byte* base,
                                  std::span<const DeviceSegmentRef> anchors, std::span<float> out) {
  KVCOMM_RETURN_IF_ERROR(Check(s));
  assert(out.size() == anchors.size() * s.tokens * 3);
  KVCOMM_ASSIGN_OR_RETURN(float* sums, Reserve<float>(workspace_->sums, out.size()));
  for (size_t first = 0; first < anchors.size(); first += cuda::kMaxAnchorRefs) {
    KVCOMM_ASSIGN_OR_RETURN(auto refs, Refs(anchors, first, s.tokens));
    KVCOMM_CUDA_RETURN_IF_ERROR(cuda::LaunchAnchorDistances(s.layers, s.kv_heads, s.tokens,
                                                            s.head_dim, Bf16(base), refs,
                                                            sums + first * s.tokens * 3, nullptr));
  }
  KVCOMM_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(out.data(), sums, out.size_bytes(), cudaMemcpyDeviceToHost));
  return Status::Ok();
}

Result<double> DeviceRealigner::ValueSquaredNorm(const RealignShape& s, const std::byte* segment) {
  KVCOMM_RETURN_IF_ERROR(Check(s));
  KVCOMM_ASSIGN_OR_RETURN(float* norm, Reserve<float>(workspace_->norm, 1));
  KVCOMM_CUDA_RETURN_IF_ERROR(cuda::LaunchValueSquaredNorm(
      s.layers, s.kv_heads, s.tokens, s.head_dim, Bf16(segment), norm, nullptr));
  float host = 0;
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaMemcpy(&host, norm, sizeof(host), cudaMemcpyDeviceToHost));
  return double{host};
}

Status DeviceRealigner::SetTokenWeights(std::span<const float> key, std::span<const float> value) {
  assert(key.size() == value.size());
  KVCOMM_RETURN_IF_ERROR(Upload(workspace_->key_weights, key).status());
  KVCOMM_RETURN_IF_ERROR(Upload(workspace_->value_weights, value).status());
  workspace_->channel_weights = false;
  return Status::Ok();
}

Status DeviceRealigner::SetChannelWeights(const RealignShape& s, const std::byte* base,
                                          std::span<const DeviceSegmentRef> anchors,
                                          float temperature) {
  KVCOMM_RETURN_IF_ERROR(Check(s));
  const int64_t count = static_cast<int64_t>(anchors.size()), n = count * s.Channels();
  KVCOMM_ASSIGN_OR_RETURN(float* sums, Reserve<float>(workspace_->sums, n));
  KVCOMM_ASSIGN_OR_RETURN(float* weights, Reserve<float>(workspace_->key_weights, n));
  for (size_t first = 0; first < anchors.size(); first += cuda::kMaxAnchorRefs) {
    KVCOMM_ASSIGN_OR_RETURN(auto refs, Refs(anchors, first, s.tokens));
    KVCOMM_CUDA_RETURN_IF_ERROR(
        cuda::LaunchAnchorChannelDistances(s.layers, s.kv_heads, s.tokens, s.head_dim, Bf16(base),
                                           refs, sums + first * s.Channels(), nullptr));
  }
  KVCOMM_CUDA_RETURN_IF_ERROR(cuda::LaunchSoftmaxOverAnchors(
      sums, count, s.Channels(), 1, 0, 1.f, /*root=*/true, temperature, weights, nullptr));
  workspace_->channel_weights = true;
  return Status::Ok();
}

Status DeviceRealigner::PositionFreeDifference(const RealignShape& s, const std::byte* a,
                                               int32_t a_first, const std::byte* b, int32_t b_first,
                                               std::span<const float> inv_freq, std::byte* out) {
  KVCOMM_RETURN_IF_ERROR(Check(s));
  for (const std::byte* p : {a, b, static_cast<const std::byte*>(out)})
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
      return InvalidArgument("GPU segments must be 16-byte aligned");
  KVCOMM_ASSIGN_OR_RETURN(float* freq, Upload(workspace_->inv_freq, inv_freq));
  KVCOMM_CUDA_RETURN_IF_ERROR(cuda::LaunchPositionFreeDifference(
      s.layers, s.kv_heads, s.tokens, s.head_dim, Bf16(a), a_first, Bf16(b), b_first, freq,
      reinterpret_cast<bf16*>(out), nullptr));
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(nullptr));
  return Status::Ok();
}

Status DeviceRealigner::Realign(const RealignShape& s, const std::byte* base,
                                std::span<const int32_t> base_positions,
                                std::span<const int32_t> target_positions,
                                std::span<const float> inv_freq,
                                std::span<const DeviceSegmentRef> deltas, std::byte* out) {
  KVCOMM_RETURN_IF_ERROR(Check(s));
  if (deltas.size() > kMaxBlendedAnchors)
    return InvalidArgument("a GPU realignment blends at most {} anchors, got {}",
                           kMaxBlendedAnchors, deltas.size());
  assert(s.per_channel_weights == workspace_->channel_weights || deltas.empty());
  KVCOMM_ASSIGN_OR_RETURN(auto refs, Refs(deltas, 0, s.tokens));
  KVCOMM_ASSIGN_OR_RETURN(int32_t * from, Upload(workspace_->base_positions, base_positions));
  KVCOMM_ASSIGN_OR_RETURN(int32_t * to, Upload(workspace_->target_positions, target_positions));
  KVCOMM_ASSIGN_OR_RETURN(float* freq, Upload(workspace_->inv_freq, inv_freq));
  KVCOMM_ASSIGN_OR_RETURN(float* key_weights, Reserve<float>(workspace_->key_weights, 1));
  KVCOMM_ASSIGN_OR_RETURN(float* value_weights, workspace_->channel_weights
                                                    ? Reserve<float>(workspace_->key_weights, 1)
                                                    : Reserve<float>(workspace_->value_weights, 1));
  KVCOMM_CUDA_RETURN_IF_ERROR(
      cuda::LaunchRealignKv(s.layers, s.kv_heads, s.tokens, s.head_dim, s.first_blended_layer,
                            s.per_channel_weights, Bf16(base), from, to, freq, refs, key_weights,
                            value_weights, reinterpret_cast<bf16*>(out), nullptr));
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(nullptr));
  return Status::Ok();
}

}  // namespace kvcomm::kernels
