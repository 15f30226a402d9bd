#include "kernels/device_realign.h"

#include <algorithm>
#include <cmath>
#include <vector>

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

// The small arrays a launch reads (positions, inv_freq, token weights), gathered in pinned
// memory and sent in one copy: a pageable copy per array costs microseconds of latency each,
// more than a short segment's kernel (bench/RESULTS.md, realign_bench).
class ParameterUpload {
 public:
  template <typename T>
  void Add(std::span<const T> values, const T** device) {
    arrays_.push_back({std::as_bytes(values), reinterpret_cast<const void**>(device)});
  }
  // Copies every array up and sets the pointers Add was given; the host buffer must not be
  // reused before the stream has run the copy (the callers wait for their kernels).
  Status Send(PinnedHostBuffer& host, DeviceBuffer& device) {
    std::vector<size_t> offsets;
    size_t total = 0;
    for (const Array& a : arrays_) {
      offsets.push_back(total);
      total += (a.bytes.size() + 15) / 16 * 16;
    }
    KVCOMM_ASSIGN_OR_RETURN(std::byte * staged, host.Reserve(std::max<size_t>(total, 16)));
    KVCOMM_ASSIGN_OR_RETURN(std::byte * sent, device.Reserve(std::max<size_t>(total, 16)));
    for (size_t i = 0; i < arrays_.size(); ++i) {
      std::copy(arrays_[i].bytes.begin(), arrays_[i].bytes.end(), staged + offsets[i]);
      *arrays_[i].device = sent + offsets[i];
    }
    KVCOMM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(sent, staged, total, cudaMemcpyHostToDevice, nullptr));
    return Status::Ok();
  }

 private:
  struct Array {
    std::span<const std::byte> bytes;
    const void** device;
  };
  std::vector<Array> arrays_;
};

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
  DeviceBuffer sums, norm, channel_weights, parameters;
  PinnedHostBuffer staged_parameters;
  // SetTokenWeights's, sent up with the next Realign's positions unless per_channel.
  std::vector<float> key_weights, value_weights;
  bool per_channel = false;
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
  workspace_->key_weights.assign(key.begin(), key.end());
  workspace_->value_weights.assign(value.begin(), value.end());
  workspace_->per_channel = false;
  return Status::Ok();
}

Status DeviceRealigner::SetChannelWeights(const RealignShape& s, const std::byte* base,
                                          std::span<const DeviceSegmentRef> anchors,
                                          float temperature) {
  KVCOMM_RETURN_IF_ERROR(Check(s));
  const int64_t count = static_cast<int64_t>(anchors.size()), n = count * s.Channels();
  KVCOMM_ASSIGN_OR_RETURN(float* sums, Reserve<float>(workspace_->sums, n));
  KVCOMM_ASSIGN_OR_RETURN(float* weights, Reserve<float>(workspace_->channel_weights, n));
  for (size_t first = 0; first < anchors.size(); first += cuda::kMaxAnchorRefs) {
    KVCOMM_ASSIGN_OR_RETURN(auto refs, Refs(anchors, first, s.tokens));
    KVCOMM_CUDA_RETURN_IF_ERROR(
        cuda::LaunchAnchorChannelDistances(s.layers, s.kv_heads, s.tokens, s.head_dim, Bf16(base),
                                           refs, sums + first * s.Channels(), nullptr));
  }
  KVCOMM_CUDA_RETURN_IF_ERROR(cuda::LaunchSoftmaxOverAnchors(
      sums, count, s.Channels(), 1, 0, 1.f, /*root=*/true, temperature, weights, nullptr));
  workspace_->per_channel = true;
  return Status::Ok();
}

Status DeviceRealigner::PositionFreeDifference(const RealignShape& s, const std::byte* a,
                                               int32_t a_first, const std::byte* b, int32_t b_first,
                                               std::span<const float> inv_freq, std::byte* out) {
  KVCOMM_RETURN_IF_ERROR(Check(s));
  for (const std::byte* p : {a, b, static_cast<const std::byte*>(out)})
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
      return InvalidArgument("GPU segments must be 16-byte aligned");
  const float* freq = nullptr;
  ParameterUpload upload;
  upload.Add(inv_freq, &freq);
  KVCOMM_RETURN_IF_ERROR(upload.Send(workspace_->staged_parameters, workspace_->parameters));
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
  Workspace& w = *workspace_;
  assert(s.per_channel_weights == w.per_channel || deltas.empty());
  KVCOMM_ASSIGN_OR_RETURN(auto refs, Refs(deltas, 0, s.tokens));
  const int32_t *from = nullptr, *to = nullptr;
  const float *freq = nullptr, *key_weights = nullptr, *value_weights = nullptr;
  ParameterUpload upload;
  upload.Add(base_positions, &from);
  upload.Add(target_positions, &to);
  upload.Add(inv_freq, &freq);
  if (w.per_channel) {
    KVCOMM_ASSIGN_OR_RETURN(key_weights, Reserve<float>(w.channel_weights, 1));
    value_weights = key_weights;
  } else {
    upload.Add(std::span<const float>(w.key_weights), &key_weights);
    upload.Add(std::span<const float>(w.value_weights), &value_weights);
  }
  KVCOMM_RETURN_IF_ERROR(upload.Send(w.staged_parameters, w.parameters));
  KVCOMM_CUDA_RETURN_IF_ERROR(
      cuda::LaunchRealignKv(s.layers, s.kv_heads, s.tokens, s.head_dim, s.first_blended_layer,
                            s.per_channel_weights, Bf16(base), from, to, freq, refs, key_weights,
                            value_weights, reinterpret_cast<bf16*>(out), nullptr));
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(nullptr));
  return Status::Ok();
}

}  // namespace kvcomm::kernels
