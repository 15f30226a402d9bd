// kernels/realign.h on bf16 segments in device memory, for callers that include no CUDA headers
// (kvcommd's anchor service). Segments use the layout of kernels/realign.h; `anchors` arrays are
// [anchor][segment] with the segment cut to the placeholder's tokens. Calls run on the default
// stream and return when their results are ready.
//
// Not thread-safe: the workspace (weights, positions, sums) is reused from call to call; give
// each thread its own DeviceRealigner. Without CUDA in the build every call reports Unavailable.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"
#include "kernels/realign.h"

namespace kvcomm::kernels {

class DeviceRealigner {
 public:
  DeviceRealigner();
  ~DeviceRealigner();
  DeviceRealigner(const DeviceRealigner&) = delete;
  DeviceRealigner& operator=(const DeviceRealigner&) = delete;

  // AnchorDistances into host memory: out has shape.anchors * shape.tokens * 3 floats.
  Status TokenSums(const RealignShape& shape, const std::byte* base, const std::byte* anchors,
                   std::span<float> out);
  // The sum of squares of a segment's values.
  Result<double> ValueSquaredNorm(const RealignShape& shape, const std::byte* segment);
  // Per-token weights, [anchor][token] each (daemon/anchor_pool.h's BlendWeights), for the next
  // Realign.
  Status SetTokenWeights(std::span<const float> key, std::span<const float> value);
  // Per-channel weights from the placeholder's base and anchors (AnchorChannelDistances, then
  // a softmax of -L2 / temperature), for the next Realign of the segment after it: `shape` is
  // the placeholder's.
  Status SetChannelWeights(const RealignShape& shape, const std::byte* base,
                           const std::byte* anchors, float temperature);
  // RealignKv with the weights set last (per channel when shape.per_channel_weights).
  Status Realign(const RealignShape& shape, const std::byte* base,
                 std::span<const int32_t> base_positions,
                 std::span<const int32_t> target_positions, std::span<const float> inv_freq,
                 const std::byte* deltas, std::byte* out);

 private:
  struct Workspace;
  std::unique_ptr<Workspace> workspace_;
};

// Copies the first `tokens` tokens of each (layer, K|V, head) row of a device segment of
// `from_tokens` tokens to `out` (device memory, `tokens` tokens a row): anchors longer than a
// placeholder are cut to it this way.
Status CopyFirstTokens(const std::byte* segment, int64_t rows, int64_t from_tokens,
                       int64_t tokens, int64_t head_dim, std::byte* out);

}  // namespace kvcomm::kernels
