#include "kvstore/compress/allocate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/compress.h"

namespace kvcomm::kvstore::compress {
namespace {

// Rounds real per-layer shares to counts in [least, tokens] that add up to `total` exactly (what
// rounding or a bound cuts is moved to the other layers, lowest first).
std::vector<int64_t> RoundShares(const std::vector<double>& shares, int64_t least, int64_t tokens,
                                 int64_t total) {
  const int64_t layers = static_cast<int64_t>(shares.size());
  std::vector<int64_t> counts(layers);
  int64_t sum = 0;
  for (int64_t l = 0; l < layers; ++l) {
    counts[l] = std::clamp<int64_t>(std::llround(shares[l]), least, tokens);
    sum += counts[l];
  }
  for (int64_t l = 0, missing = total - sum; missing != 0; l = (l + 1) % layers) {
    const int64_t step = missing > 0 ? 1 : -1;
    if (counts[l] + step >= least && counts[l] + step <= tokens) {
      counts[l] += step;
      missing -= step;
    }
  }
  return counts;
}

// CAKE's preference of each layer: dispersion (entropy of the window's mean attention) times
// shift (variance of the attention over the window's queries), averaged over query heads.
Result<std::vector<double>> CakePreferences(const AllocatorSpec& spec, const KvLayout& layout,
                                            const AllocationInputs& in) {
  if (in.queries.empty() || in.window < 2)
    return InvalidArgument(
        "allocator 'cake' reads the observation window's attention: send at least 2 queries "
        "per layer (got {})",
        in.queries.empty() ? 0 : in.window);
  const int64_t T = layout.tokens, D = layout.head_dim, Q = in.q_heads;
  const int64_t W = std::min(spec.window, in.window), skip = in.window - W;
  const uint64_t layer_kv = 2 * layout.ElementsPerHalf();
  std::vector<float> queries(Q * W * D), probs(Q * W * T);
  std::vector<double> preferences(layout.num_layers);
  for (uint32_t l = 0; l < layout.num_layers; ++l) {
    for (int64_t h = 0; h < Q; ++h)  // the last W of the window's queries
      std::copy_n(in.queries.data() + ((uint64_t{l} * Q + h) * in.window + skip) * D, W * D,
                  queries.data() + h * W * D);
    kernels::cpu::ObservationAttention(queries.data(), in.kv.data() + l * layer_kv, Q,
                                       layout.kv_heads, W, T, D, probs.data());
    double entropy = 0, shift = 0;
    for (int64_t h = 0; h < Q; ++h)
      for (int64_t t = 0; t < T; ++t) {
        double mean = 0, square = 0;
        for (int64_t i = 0; i < W; ++i) {
          const double a = probs[(h * W + i) * T + t];
          mean += a / W;
          square += a * a / W;
        }
        if (mean > 0) entropy -= mean * std::log(mean);
        shift += std::max(0.0, square - mean * mean);
      }
    preferences[l] = std::pow(entropy / Q, 1 / spec.tau1) * std::pow(shift / Q, 1 / spec.tau2);
  }
  return preferences;
}

// LAVa's preference of each layer: the entropy of its scores, normalised by the largest
// possible (log of the count), over every head and token but the always-kept (+inf) ones.
Result<std::vector<double>> LavaPreferences(const KvLayout& layout, std::span<const float> scores) {
  const uint64_t per_layer = uint64_t{layout.kv_heads} * layout.tokens;
  std::vector<double> preferences(layout.num_layers);
  for (uint32_t l = 0; l < layout.num_layers; ++l) {
    const float* x = scores.data() + l * per_layer;
    double sum = 0;
    uint64_t n = 0;
    for (uint64_t i = 0; i < per_layer; ++i) {
      if (!std::isfinite(x[i])) continue;
      if (x[i] < 0)
        return InvalidArgument(
            "allocator 'lava' reads the method's scores as a distribution: they must not be "
            "negative (use an attention-based method)");
      sum += x[i];
      ++n;
    }
    double entropy = 0;
    for (uint64_t i = 0; i < per_layer && sum > 0; ++i)
      if (std::isfinite(x[i]) && x[i] > 0) entropy -= x[i] / sum * std::log(x[i] / sum);
    preferences[l] = n > 1 ? entropy / std::log(double(n)) : 1.0;
  }
  return preferences;
}

// D2O's preference of each layer: the inverse of the variance of its attention density (each
// head's scores normalised to sum 1, variance over the tokens, averaged over heads): layers of
// dense, even attention lose more by eviction and get more (our reading of the paper's rule).
Result<std::vector<double>> D2oPreferences(const KvLayout& layout, std::span<const float> scores) {
  const int64_t T = layout.tokens, H = layout.kv_heads;
  std::vector<double> preferences(layout.num_layers);
  for (uint32_t l = 0; l < layout.num_layers; ++l) {
    double variance = 0;
    for (int64_t h = 0; h < H; ++h) {
      const float* x = scores.data() + (uint64_t{l} * H + h) * T;
      double sum = 0;
      for (int64_t t = 0; t < T; ++t) {
        if (x[t] < 0)
          return InvalidArgument(
              "allocator 'd2o' reads the method's scores as attention density: they must not be "
              "negative (use an attention-based method)");
        sum += x[t];
      }
      if (sum <= 0) continue;
      double square = 0;
      for (int64_t t = 0; t < T; ++t) square += (x[t] / sum) * (x[t] / sum) / T;
      variance += (square - 1.0 / (double(T) * T)) / H;  // E[p^2] - E[p]^2, E[p] = 1 / T
    }
    preferences[l] = 1.0 / std::max(variance, 1e-30);
  }
  return preferences;
}

}  // namespace

Result<AllocatorSpec> ParseAllocator(const MethodSpec& spec) {
  AllocatorSpec a;
  if (spec.name == "uniform") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"heads", "floor"}));
  } else if (spec.name == "pyramid") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"beta", "heads", "floor"}));
    a.layers = AllocatorSpec::Layers::kPyramid;
    KVCOMM_ASSIGN_OR_RETURN(a.beta, IntParam(spec, "beta", 20, 1, 1000));
  } else if (spec.name == "cake") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"tau1", "tau2", "window", "heads", "floor"}));
    a.layers = AllocatorSpec::Layers::kCake;
    KVCOMM_ASSIGN_OR_RETURN(a.window, IntParam(spec, "window", 32, 2, 1 << 20));
    KVCOMM_ASSIGN_OR_RETURN(a.tau1, NumberParam(spec, "tau1", 1, 0.01, 100));
    KVCOMM_ASSIGN_OR_RETURN(a.tau2, NumberParam(spec, "tau2", 1, 0.01, 100));
  } else if (spec.name == "d2o") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"heads", "floor"}));
    a.layers = AllocatorSpec::Layers::kD2o;
  } else if (spec.name == "lava") {
    KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"heads", "floor"}));
    a.layers = AllocatorSpec::Layers::kLava;
  } else {
    return InvalidArgument("unknown allocator '{}' (uniform, pyramid, cake, lava or d2o)",
                           spec.name);
  }
  KVCOMM_ASSIGN_OR_RETURN(
      auto heads,
      ChoiceParam(spec, "heads", spec.name == "lava" ? "ada" : "uniform", {"uniform", "ada"}));
  a.adaptive_heads = heads == "ada";
  KVCOMM_ASSIGN_OR_RETURN(a.floor_percent, IntParam(spec, "floor", 20, 0, 100));
  if (!a.adaptive_heads && spec.params.contains("floor"))
    return InvalidArgument("allocator '{}': floor= applies to heads=ada only", spec.name);
  return a;
}

Result<std::vector<int64_t>> AllocateLayers(const AllocatorSpec& spec, const KvLayout& layout,
                                            int64_t average, int64_t least,
                                            const AllocationInputs& inputs) {
  const int64_t layers = layout.num_layers, total = average * layers;
  std::vector<double> shares(layers, static_cast<double>(average));
  if (spec.layers == AllocatorSpec::Layers::kPyramid && layers > 1) {
    // The top layer keeps average / beta, the bottom 2 * average - that, linearly in between.
    const double low = std::max(1.0, static_cast<double>(average) / spec.beta);
    const double high = 2.0 * average - low;
    for (int64_t l = 0; l < layers; ++l) shares[l] = high - (high - low) * l / (layers - 1);
  } else if (spec.layers != AllocatorSpec::Layers::kUniform &&
             spec.layers != AllocatorSpec::Layers::kPyramid) {
    std::vector<double> preferences;
    if (spec.layers == AllocatorSpec::Layers::kCake) {
      KVCOMM_ASSIGN_OR_RETURN(preferences, CakePreferences(spec, layout, inputs));
    } else if (spec.layers == AllocatorSpec::Layers::kLava) {
      KVCOMM_ASSIGN_OR_RETURN(preferences, LavaPreferences(layout, inputs.scores));
    } else {
      KVCOMM_ASSIGN_OR_RETURN(preferences, D2oPreferences(layout, inputs.scores));
    }
    const double sum = std::accumulate(preferences.begin(), preferences.end(), 0.0);
    // Equal preferences everywhere (sum 0: no attention moves) leave the uniform split.
    if (sum > 0 && std::isfinite(sum))
      for (int64_t l = 0; l < layers; ++l) shares[l] = preferences[l] / sum * total;
  }
  return RoundShares(shares, least, layout.tokens, total);
}

Result<std::vector<uint32_t>> AllocateHeads(std::span<const float> scores, int64_t kv_heads,
                                            int64_t tokens, int64_t layer_total, int64_t floor,
                                            bool normalise) {
  struct Candidate {
    double weight;
    int64_t head;
  };
  std::vector<uint32_t> counts(kv_heads);
  std::vector<Candidate> candidates;
  int64_t assigned = 0;
  std::vector<float> finite;
  for (int64_t h = 0; h < kv_heads; ++h) {
    const float* row = scores.data() + h * tokens;
    finite.clear();
    double sum = 0;
    for (int64_t t = 0; t < tokens; ++t)
      if (std::isfinite(row[t])) {
        if (row[t] < 0)
          return InvalidArgument(
              "heads=ada shares a layer by each head's score mass: the method's scores must not "
              "be negative (use an attention-based method)");
        finite.push_back(row[t]);
        sum += row[t];
      }
    const int64_t forced = tokens - static_cast<int64_t>(finite.size());
    const int64_t own = std::min(tokens, std::max(floor, forced));
    counts[h] = static_cast<uint32_t>(own);
    assigned += own;
    // The head's remaining tokens compete across heads by their share of the head's total.
    std::sort(finite.begin(), finite.end(), std::greater<>());
    for (size_t i = own - forced; i < finite.size(); ++i)
      candidates.push_back({normalise ? (sum > 0 ? finite[i] / sum : 0.0) : finite[i], h});
  }
  const int64_t rest =
      std::clamp<int64_t>(layer_total - assigned, 0, static_cast<int64_t>(candidates.size()));
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) { return a.weight > b.weight; });
  for (int64_t i = 0; i < rest; ++i) ++counts[candidates[i].head];
  return counts;
}

std::vector<uint32_t> DuoHeadCounts(std::span<const float> head_scores, int64_t retrieval,
                                    int64_t tokens, int64_t streaming) {
  std::vector<int64_t> order(head_scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return head_scores[a] > head_scores[b]; });
  std::vector<uint32_t> counts(head_scores.size(), static_cast<uint32_t>(streaming));
  for (int64_t i = 0; i < retrieval; ++i) counts[order[i]] = static_cast<uint32_t>(tokens);
  return counts;
}

}  // namespace kvcomm::kvstore::compress
