#include "daemon/anchor_pool.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>

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

// Visits (layer, kv, head, token < tokens) rows of two views with the same shape but possibly
// different token counts, calling fn(row_a, row_b, kv, token).
template <typename Fn>
void ForEachRow(const KvView& a, const KvView& b, uint32_t tokens, Fn&& fn) {
  const KvLayout& la = a.layout;
  for (uint32_t layer = 0; layer < la.num_layers; ++layer) {
    for (uint32_t kv = 0; kv < 2; ++kv) {
      for (uint32_t h = 0; h < la.kv_heads; ++h) {
        for (uint32_t t = 0; t < tokens; ++t) {
          fn(a.data + la.Offset(layer, kv, h, t) / sizeof(float),
             b.data + b.layout.Offset(layer, kv, h, t) / sizeof(float), kv, t);
        }
      }
    }
  }
}

[[maybe_unused]] bool SameShape(const KvLayout& a, const KvLayout& b) {
  return a.num_layers == b.num_layers && a.kv_heads == b.kv_heads && a.head_dim == b.head_dim &&
         a.dtype == DType::kF32 && b.dtype == DType::kF32;
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

  std::vector<double> distances;
  for (size_t i : candidates) {
    double squared = 0;
    ForEachRow(candidate, anchors[i], tokens,
               [&](const float* a, const float* b, uint32_t kv, uint32_t) {
                 if (kv == 0) return;  // values only
                 for (uint32_t d = 0; d < candidate.layout.head_dim; ++d)
                   squared += double(a[d] - b[d]) * (a[d] - b[d]);
               });
    distances.push_back(std::sqrt(squared));
  }
  const std::vector<double> weights = SoftmaxOfNegative(distances, 1.0);
  for (double w : weights) {
    if (w > 0) decision.entropy -= w * std::log2(w);
  }
  decision.limit = config.entropy_threshold * std::log2(static_cast<double>(candidates.size()));
  double squared_norm = 0;
  ForEachRow(candidate, candidate, tokens,
             [&](const float* a, const float*, uint32_t kv, uint32_t) {
               if (kv == 0) return;
               for (uint32_t d = 0; d < candidate.layout.head_dim; ++d)
                 squared_norm += double{a[d]} * a[d];
             });
  decision.relative_distance =
      *std::min_element(distances.begin(), distances.end()) / std::sqrt(squared_norm + 1e-30);
  if (decision.entropy > decision.limit) return decision;
  if (config.max_relative_distance > 0 && decision.relative_distance > config.max_relative_distance)
    return decision;

  decision.prefill = false;
  std::vector<size_t> order(candidates.size());
  std::iota(order.begin(), order.end(), 0);
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
  const uint32_t tokens = candidate.layout.tokens;
  const size_t n = anchors.size();
  // distance[kv][anchor][token]: mean absolute difference over layers, heads and dims.
  std::vector<double> distance[2] = {std::vector<double>(n * tokens),
                                     std::vector<double>(n * tokens)};
  const double per_token = static_cast<double>(candidate.layout.num_layers) *
                           candidate.layout.kv_heads * candidate.layout.head_dim;
  for (size_t a = 0; a < n; ++a) {
    assert(SameShape(candidate.layout, anchors[a].layout) && anchors[a].layout.tokens >= tokens);
    ForEachRow(candidate, anchors[a], tokens,
               [&](const float* x, const float* y, uint32_t kv, uint32_t t) {
                 double sum = 0;
                 for (uint32_t d = 0; d < candidate.layout.head_dim; ++d)
                   sum += std::abs(double{x[d]} - y[d]);
                 distance[kv][a * tokens + t] += sum / per_token;
               });
  }
  BlendWeights weights{std::vector<float>(n * tokens), std::vector<float>(n * tokens)};
  std::vector<double> column(n);
  for (uint32_t kv = 0; kv < 2; ++kv) {
    std::vector<float>& out = kv == 0 ? weights.key : weights.value;
    for (uint32_t t = 0; t < tokens; ++t) {
      for (size_t a = 0; a < n; ++a) column[a] = distance[kv][a * tokens + t];
      const std::vector<double> w = SoftmaxOfNegative(column, temperature);
      for (size_t a = 0; a < n; ++a) out[a * tokens + t] = static_cast<float>(w[a]);
    }
  }
  return weights;
}

std::vector<float> FollowingSegmentWeights(const KvView& candidate,
                                           const std::vector<KvView>& anchors, double temperature) {
  const KvLayout& l = candidate.layout;
  const size_t n = anchors.size();
  const size_t channels = size_t{l.num_layers} * 2 * l.kv_heads * l.head_dim;
  // squared[anchor][channel], channel = ((layer * 2 + kv) * kv_heads + head) * head_dim + d.
  std::vector<double> squared(n * channels);
  for (size_t a = 0; a < n; ++a) {
    assert(SameShape(l, anchors[a].layout) && anchors[a].layout.tokens >= l.tokens);
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      for (uint32_t kv = 0; kv < 2; ++kv) {
        for (uint32_t h = 0; h < l.kv_heads; ++h) {
          double* row = squared.data() + a * channels +
                        ((size_t{layer} * 2 + kv) * l.kv_heads + h) * l.head_dim;
          for (uint32_t t = 0; t < l.tokens; ++t) {
            const float* x = candidate.data + l.Offset(layer, kv, h, t) / sizeof(float);
            const float* y =
                anchors[a].data + anchors[a].layout.Offset(layer, kv, h, t) / sizeof(float);
            for (uint32_t d = 0; d < l.head_dim; ++d) row[d] += double(x[d] - y[d]) * (x[d] - y[d]);
          }
        }
      }
    }
  }
  std::vector<float> weights(n * channels);
  std::vector<double> column(n);
  for (size_t c = 0; c < channels; ++c) {
    for (size_t a = 0; a < n; ++a) column[a] = std::sqrt(squared[a * channels + c]);
    const std::vector<double> w = SoftmaxOfNegative(column, temperature);
    for (size_t a = 0; a < n; ++a) weights[a * channels + c] = static_cast<float>(w[a]);
  }
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
