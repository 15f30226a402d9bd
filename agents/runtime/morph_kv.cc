#include "agents/runtime/morph_kv.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace kvcomm::runtime {

Status MorphKvOptions::Validate() const {
  if (capacity == 0) return Status::Ok();
  if (recent < 1 || capacity <= recent)
    return InvalidArgument("MorphKV needs recent >= 1 and capacity > recent (got {} and {})",
                           recent, capacity);
  return Status::Ok();
}

MorphKv::MorphKv(const ModelConfig& c, MorphKvOptions options)
    : layers_(c.num_layers),
      heads_(c.num_heads),
      kv_heads_(c.num_kv_heads),
      head_dim_(c.head_dim),
      options_(options) {}

void MorphKv::Observe(const QueryCapture& capture) {
  const int64_t n = capture.tokens;
  for (int64_t i = std::max<int64_t>(0, n - options_.recent); i < n; ++i) {
    std::vector<float> token(layers_ * heads_ * head_dim_);
    for (int64_t l = 0; l < layers_; ++l)
      for (int64_t h = 0; h < heads_; ++h)
        std::copy_n(capture.queries.data() + ((l * heads_ + h) * n + i) * head_dim_, head_dim_,
                    token.data() + (l * heads_ + h) * head_dim_);
    queries_.push_back(std::move(token));
    if (static_cast<int64_t>(queries_.size()) > options_.recent) queries_.pop_front();
  }
}

Status MorphKv::Trim(KvCache& cache) const {
  const int64_t length = cache.length(), window_start = length - options_.recent;
  const int64_t keep_old = options_.capacity - options_.recent, group = heads_ / kv_heads_;
  if (window_start <= keep_old || queries_.empty()) return Status::Ok();
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  std::vector<int32_t> held;
  std::vector<double> logits(length), score;
  std::vector<int32_t> order, dropped;
  for (int64_t l = 0; l < layers_; ++l) {
    const uint8_t* gone = cache.dropped(l);
    for (int64_t h = 0; h < kv_heads_; ++h) {
      auto is_held = [&](int64_t p) { return !gone || !gone[h * cache.capacity() + p]; };
      held.clear();
      for (int64_t p = 0; p < window_start; ++p)
        if (is_held(p)) held.push_back(static_cast<int32_t>(p));
      if (static_cast<int64_t>(held.size()) <= keep_old) continue;
      score.assign(held.size(), 0.0);
      const float* keys = cache.keys(l) + h * cache.capacity() * head_dim_;
      for (const auto& token : queries_)
        for (int64_t g = 0; g < group; ++g) {
          const float* q = token.data() + (l * heads_ + h * group + g) * head_dim_;
          double top = -INFINITY, sum = 0;
          for (int64_t p = 0; p < length; ++p) {
            if (!is_held(p)) continue;
            double dot = 0;
            for (int64_t d = 0; d < head_dim_; ++d) dot += double{q[d]} * keys[p * head_dim_ + d];
            logits[p] = dot * scale;
            top = std::max(top, logits[p]);
          }
          for (int64_t p = 0; p < length; ++p)
            if (is_held(p)) sum += std::exp(logits[p] - top);
          for (size_t i = 0; i < held.size(); ++i)
            score[i] += std::exp(logits[held[i]] - top) / sum;
        }
      order.resize(held.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return score[a] > score[b]; });
      dropped.clear();
      for (size_t i = keep_old; i < order.size(); ++i) dropped.push_back(held[order[i]]);
      KVCOMM_RETURN_IF_ERROR(cache.Drop(l, h, dropped));
    }
  }
  return Status::Ok();
}

}  // namespace kvcomm::runtime
