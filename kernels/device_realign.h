// kernels/realign.h on bf16 segments in device memory, for callers that include no CUDA headers
// (kvcommd's anchor service). Segments use the layout of kernels/realign.h. Anchors (bases or
// deltas) are referenced where they lie, each at least as long as the segment worked on (only
// its first tokens count), so nothing is copied to line them up. Calls run on the default
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

// A bf16 segment in device memory and its token count.
struct DeviceSegmentRef {
  const std::byte* data;
  int64_t tokens;
};

class DeviceRealigner {
 public:
  // Realign blends at most this many deltas (distances take any number of anchors).
  static constexpr size_t kMaxBlendedAnchors = 32;

  DeviceRealigner();
  ~DeviceRealigner();
  DeviceRealigner(const DeviceRealigner&) = delete;
  DeviceRealigner& operator=(const DeviceRealigner&) = delete;

  // AnchorDistances into host memory: out has anchors.size() * shape.tokens * 3 floats.
  Status TokenSums(const RealignShape& shape, const std::byte* base,
                   std::span<const DeviceSegmentRef> anchors, std::span<float> out);
  // The sum of squares of a segment's values.
  Result<double> ValueSquaredNorm(const RealignShape& shape, const std::byte* segment);
  // Per-token weights, [anchor][token] each (daemon/anchor_pool.h's BlendWeights), for the next
  // Realign.
  Status SetTokenWeights(std::span<const float> key, std::span<const float> value);
  // Per-channel weights from the placeholder's base and anchors (AnchorChannelDistances, then
  // a softmax of -L2 / temperature), for the next Realign of the segment after it: `shape` is
  // the placeholder's.
  Status SetChannelWeights(const RealignShape& shape, const std::byte* base,
                           std::span<const DeviceSegmentRef> anchors, float temperature);
  // PositionFreeDifference of two segments of shape.tokens tokens into `out`.
  Status PositionFreeDifference(const RealignShape& shape, const std::byte* a, int32_t a_first,
                                const std::byte* b, int32_t b_first,
                                std::span<const float> inv_freq, std::byte* out);
  // RealignKv with the weights set last (per channel when shape.per_channel_weights), blending
  // the deltas (shape.anchors is ignored: one weight row per delta).
  Status Realign(const RealignShape& shape, const std::byte* base,
                 std::span<const int32_t> base_positions, std::span<const int32_t> target_positions,
                 std::span<const float> inv_freq, std::span<const DeviceSegmentRef> deltas,
                 std::byte* out);

 private:
  struct Workspace;
  std::unique_ptr<Workspace> workspace_;
};

}  // namespace kvcomm::kernels
