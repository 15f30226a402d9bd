#include "daemon/anchor_pool.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>

#include "kernels/realign.h"

namespace kvcomm::daemon {
namespace {

// Softmax of -distance / temperature.
std::vector<double> SoftmaxOfNegative(const std::vector<double>& distances, double temperature) {
  const double min_distance = *std::min_element(distances.begin(), distances.end());
  std::vector<double> weights(distances.size());
  double total = 0;
  for (size_t i = 0; i < distances.size(); ++i) {
    weights[i] = std::exp(-(distances[i] - min_distance) / temperature);
    total += weights[i];
  }
  for (auto& w : weights) w /= total;
  return weights;
}

[[maybe_unused]] bool SameShape(const KvLayout& a, const KvLayout& b) {
  return a.num_layers == b.num_layers && a.kv_heads == b.kv_heads && a.head_dim == b.head_dim &&
         a.dtype == DType::kF32 && b.dtype == DType::kF32;
}

// The chosen anchors, each cut to the candidate's tokens, in the contiguous [anchor][segment]
// form of the distance kernels (kernels/realign.h): the daemon's reuse decisions and blend
// weights use the same definitions as the GPU path.
struct AnchorSet {
  kernels::RealignShape shape;
  std::vector<float> bases;  // [anchor][layer][K|V][kv_heads][tokens][head_dim]
};

AnchorSet CutToCandidate(const KvView& candidate, const std::vector<KvView>& anchors,
                         const std::vector<size_t>& chosen) {
  const KvLayout& l = candidate.layout;
  AnchorSet set;
  set.shape = {.layers = l.num_layers,
               .kv_heads = l.kv_heads,
               .tokens = l.tokens,
               .head_dim = l.head_dim,
               .anchors = static_cast<int64_t>(chosen.size())};
  const int64_t segment = set.shape.SegmentElements(), row = int64_t{l.tokens} * l.head_dim;
  set.bases.resize(chosen.size() * segment);
  for (size_t a = 0; a < chosen.size(); ++a) {
    const KvView& anchor = anchors[chosen[a]];
    assert(SameShape(l, anchor.layout) && anchor.layout.tokens >= l.tokens);
    float* to = set.bases.data() + a * segment;
    for (uint32_t layer = 0; layer < l.num_layers; ++layer)
      for (uint32_t kv = 0; kv < 2; ++kv)
        for (uint32_t h = 0; h < l.kv_heads; ++h, to += row)
          std::copy_n(anchor.data + anchor.layout.Offset(layer, kv, h, 0) / sizeof(float), row, to);
  }
  return set;
}

std::vector<size_t> All(size_t n) {
  std::vector<size_t> indices(n);
  std::iota(indices.begin(), indices.end(), 0);
  return indices;
}

}  // namespace

Status AnchorPoolConfig::Validate() const {
  if (capacity < 2) return InvalidArgument("anchor capacity must be at least 2, got {}", capacity);
  if (eviction_window == 0 || eviction_window > capacity) {
    return InvalidArgument("anchor eviction window must be in 1..capacity ({}), got {}", capacity,
                           eviction_window);
  }
  if (!(entropy_threshold >= 0 && entropy_threshold <= 1)) {
    return InvalidArgument("anchor entropy threshold must be in [0, 1], got {}", entropy_threshold);
  }
  if (!(top_p > 0 && top_p <= 1))
    return InvalidArgument("anchor top_p must be in (0, 1], got {}", top_p);
  if (!(temperature > 0))
    return InvalidArgument("anchor temperature must be positive, got {}", temperature);
  if (!(max_relative_distance >= 0))
    return InvalidArgument("anchor max_relative_distance must be >= 0, got {}",
                           max_relative_distance);
  return Status::Ok();
}

ReuseDecision DecideReuse(const KvView& candidate, const std::vector<KvView>& anchors,
                          const AnchorPoolConfig& config) {
  ReuseDecision decision;
  const uint32_t tokens = candidate.layout.tokens;
  std::vector<size_t> candidates;
  for (size_t i = 0; i < anchors.size(); ++i) {
    assert(SameShape(candidate.layout, anchors[i].layout));
    if (anchors[i].layout.tokens >= tokens) candidates.push_back(i);
  }
  if (candidates.size() < 2) return decision;

  const AnchorSet set = CutToCandidate(candidate, anchors, candidates);
  std::vector<float> sums(candidates.size() * tokens * 3);
  kernels::cpu::AnchorDistances(set.shape, candidate.data, set.bases.data(), sums.data());
  double squared_norm = 0;
  const KvLayout& l = candidate.layout;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    for (uint32_t h = 0; h < l.kv_heads; ++h) {
      const float* values = candidate.data + l.Offset(layer, 1, h, 0) / sizeof(float);
      for (size_t i = 0; i < size_t{tokens} * l.head_dim; ++i)
        squared_norm += double{values[i]} * values[i];
    }
  }
  return DecideReuseFromSums(std::move(sums), candidates, tokens, squared_norm, config);
}

ReuseDecision DecideReuseFromSums(std::vector<float> token_sums,
                                  const std::vector<size_t>& candidates, uint32_t tokens,
                                  double value_squared_norm, const AnchorPoolConfig& config) {
  ReuseDecision decision;
  if (candidates.size() < 2) return decision;
  assert(token_sums.size() == candidates.size() * tokens * 3);
  // The L2 distance of the values, from the per-token sums of squared differences.
  std::vector<double> distances(candidates.size());
  for (size_t a = 0; a < candidates.size(); ++a) {
    double squared = 0;
    for (uint32_t t = 0; t < tokens; ++t) squared += token_sums[(a * tokens + t) * 3 + 2];
    distances[a] = std::sqrt(squared);
  }
  decision.token_sums = std::move(token_sums);
  const std::vector<double> weights = SoftmaxOfNegative(distances, 1.0);
  for (double w : weights) {
    if (w > 0) decision.entropy -= w * std::log2(w);
  }
  decision.limit = config.entropy_threshold * std::log2(static_cast<double>(candidates.size()));
  decision.relative_distance =
      *std::min_element(distances.begin(), distances.end()) / std::sqrt(value_squared_norm + 1e-30);
  if (decision.entropy > decision.limit) return decision;
  if (config.max_relative_distance > 0 && decision.relative_distance > config.max_relative_distance)
    return decision;

  decision.prefill = false;
  std::vector<size_t> order = All(candidates.size());
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return weights[a] > weights[b]; });
  double mass = 0;
  for (size_t k = 0; k < order.size() && (k == 0 || mass < config.top_p); ++k) {
    mass += weights[order[k]];
    decision.credited.push_back(candidates[order[k]]);
  }
  return decision;
}

BlendWeights PlaceholderWeights(const KvView& candidate, const std::vector<KvView>& anchors,
                                double temperature) {
  const AnchorSet set = CutToCandidate(candidate, anchors, All(anchors.size()));
  std::vector<float> sums(set.shape.anchors * set.shape.tokens * 3);
  kernels::cpu::AnchorDistances(set.shape, candidate.data, set.bases.data(), sums.data());
  return PlaceholderWeights(sums, anchors.size(), candidate.layout, temperature);
}

BlendWeights PlaceholderWeights(std::span<const float> token_sums, size_t anchors,
                                const KvLayout& candidate, double temperature) {
  const int64_t n = static_cast<int64_t>(anchors), tokens = candidate.tokens;
  assert(token_sums.size() == static_cast<size_t>(n * tokens * 3));
  // Mean absolute difference over layers, heads and dims, per token; keys and values apart.
  const float per_token = 1.0f / static_cast<float>(int64_t{candidate.num_layers} *
                                                    candidate.kv_heads * candidate.head_dim);
  BlendWeights weights{std::vector<float>(n * tokens), std::vector<float>(n * tokens)};
  kernels::cpu::SoftmaxOverAnchors(token_sums.data(), n, tokens, 3, 0, per_token, false,
                                   static_cast<float>(temperature), weights.key.data());
  kernels::cpu::SoftmaxOverAnchors(token_sums.data(), n, tokens, 3, 1, per_token, false,
                                   static_cast<float>(temperature), weights.value.data());
  return weights;
}

std::vector<float> FollowingSegmentWeights(const KvView& candidate,
                                           const std::vector<KvView>& anchors, double temperature) {
  const AnchorSet set = CutToCandidate(candidate, anchors, All(anchors.size()));
  const int64_t n = set.shape.anchors, channels = set.shape.Channels();
  std::vector<float> squared(n * channels), weights(n * channels);
  kernels::cpu::AnchorChannelDistances(set.shape, candidate.data, set.bases.data(), squared.data());
  // The L2 norm along the tokens, per channel.
  kernels::cpu::SoftmaxOverAnchors(squared.data(), n, channels, 1, 0, 1.0f, true,
                                   static_cast<float>(temperature), weights.data());
  return weights;
}

std::vector<size_t> AnchorSlot::CandidatesFor(uint32_t tokens) const {
  std::vector<size_t> out;
  for (size_t i = 0; i < anchors_.size(); ++i) {
    if (anchors_[i].tokens >= tokens) out.push_back(i);
  }
  return out;
}

std::optional<AnchorSlot::Anchor> AnchorSlot::Add(Anchor anchor) {
  for (auto& existing : anchors_) {
    if (existing.base == anchor.base) {
      existing = std::move(anchor);
      return std::nullopt;
    }
  }
  std::optional<Anchor> evicted;
  if (anchors_.size() >= config_.capacity) {
    const size_t window = std::min<size_t>(config_.eviction_window, anchors_.size());
    size_t victim = 0;
    for (size_t i = 1; i < window; ++i) {
      if (anchors_[i].activations < anchors_[victim].activations) victim = i;
    }
    evicted = std::move(anchors_[victim]);
    anchors_.erase(anchors_.begin() + static_cast<std::ptrdiff_t>(victim));
  }
  anchors_.push_back(std::move(anchor));
  return evicted;
}

void AnchorSlot::Credit(const std::vector<size_t>& indices) {
  for (size_t i : indices) {
    assert(i < anchors_.size());
    ++anchors_[i].activations;
  }
}

bool AnchorSlot::SetDeltas(const SegmentKey& base, const std::string& agent, AgentDeltas deltas) {
  for (auto& anchor : anchors_) {
    if (anchor.base == base) {
      anchor.deltas[agent] = deltas;
      return true;
    }
  }
  return false;
}

}  // namespace kvcomm::daemon
