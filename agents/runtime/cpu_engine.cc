// The CPU backend: OpenBLAS GEMM and the kernels/cpu reference ops, fp32 throughout.
#include <cmath>

#include "agents/runtime/internal/engine.h"
#include "kernels/model_ops.h"

namespace kvcomm::runtime::internal {
namespace {

namespace ops = kernels::cpu;

class CpuEngine final : public Engine {
 public:
  CpuEngine(const ModelConfig& config, ModelWeights weights)
      : c_(config), w_(std::move(weights)), inv_freq_(config.RopeInverseFrequencies()) {}

  Device device() const override { return Device::kCpu; }

  Result<std::vector<float>> Forward(std::span<const int32_t> tokens, int64_t start, KvCache& cache,
                                     bool all_logits, QueryCapture* capture) override {
    const RowRun run{0, static_cast<int64_t>(tokens.size()), start};
    return ForwardRows(tokens, std::span(&run, 1), cache, all_logits, capture);
  }

  // The runs' rows through the weights together (one pass), as the CUDA engine does.
  Result<std::vector<float>> ForwardRuns(std::span<const Model::TokenRun> runs,
                                         KvCache& cache) override {
    std::vector<int32_t> tokens;
    const std::vector<RowRun> rows = ConcatenateRuns(runs, &tokens);
    return ForwardRows(tokens, rows, cache, false, nullptr);
  }

 private:
  // Every layer writes all runs' KV before any run's attention, so a run sees the ones before.
  Result<std::vector<float>> ForwardRows(std::span<const int32_t> tokens,
                                         std::span<const RowRun> runs, KvCache& cache,
                                         bool all_logits, QueryCapture* capture) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    const int64_t hidden = c_.hidden_size, heads = c_.num_heads, kv_heads = c_.num_kv_heads,
                  hd = c_.head_dim;
    const int64_t q_dim = heads * hd, kv_dim = kv_heads * hd, inter = c_.intermediate_size;
    const float eps = static_cast<float>(c_.rms_norm_eps);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const std::vector<int32_t> positions = RowPositions(runs, n);

    std::vector<float> x(n * hidden), h(n * hidden), q(n * q_dim), k(n * kv_dim), v(n * kv_dim),
        attn(n * q_dim), gate(n * inter), up(n * inter);
    ops::Embedding(w_.embed.data(), tokens, hidden, x.data());
    for (int64_t layer = 0; layer < c_.num_layers; ++layer) {
      const LayerWeights& w = w_.layers[layer];
      auto bias = [](const std::vector<float>& b) { return b.empty() ? nullptr : b.data(); };
      ops::RmsNorm(x.data(), w.input_norm.data(), n, hidden, eps, h.data());
      ops::Linear(h.data(), w.q.data(), bias(w.q_bias), n, hidden, q_dim, q.data());
      ops::Linear(h.data(), w.k.data(), bias(w.k_bias), n, hidden, kv_dim, k.data());
      ops::Linear(h.data(), w.v.data(), bias(w.v_bias), n, hidden, kv_dim, v.data());
      ops::Rope(q.data(), positions, heads, hd, inv_freq_);
      ops::Rope(k.data(), positions, kv_heads, hd, inv_freq_);
      if (capture) {  // token-major [n][heads][hd] -> [layer][head][token][hd]
        const int64_t c = capture->tokens;
        float* out = capture->queries.data() + layer * heads * c * hd;
        for (int64_t t = n - c; t < n; ++t)
          for (int64_t hq = 0; hq < heads; ++hq)
            std::copy_n(q.data() + (t * heads + hq) * hd, hd, out + (hq * c + t - (n - c)) * hd);
      }
      // Token-major [n][kv_heads][hd] into the cache's head-major [kv_heads][capacity][hd].
      float* k_cache = cache.keys(layer);
      float* v_cache = cache.values(layer);
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t g = 0; g < kv_heads; ++g) {
          const int64_t to = (g * cache.capacity() + positions[t]) * hd;
          std::copy_n(k.data() + (t * kv_heads + g) * hd, hd, k_cache + to);
          std::copy_n(v.data() + (t * kv_heads + g) * hd, hd, v_cache + to);
        }
      }
      for (const RowRun& run : runs)
        ops::Attention(q.data() + run.row * q_dim, k_cache, v_cache, run.rows, run.start, heads,
                       kv_heads, hd, cache.capacity(), scale, attn.data() + run.row * q_dim,
                       cache.dropped(layer));
      ops::Linear(attn.data(), w.o.data(), nullptr, n, q_dim, hidden, h.data());
      ops::AddInPlace(x.data(), h.data(), n * hidden);

      ops::RmsNorm(x.data(), w.post_norm.data(), n, hidden, eps, h.data());
      ops::Linear(h.data(), w.gate.data(), nullptr, n, hidden, inter, gate.data());
      ops::Linear(h.data(), w.up.data(), nullptr, n, hidden, inter, up.data());
      ops::SwiGlu(gate.data(), up.data(), n * inter, gate.data());
      ops::Linear(gate.data(), w.down.data(), nullptr, n, inter, hidden, h.data());
      ops::AddInPlace(x.data(), h.data(), n * hidden);
    }
    const int64_t rows = all_logits ? n : 1;
    const float* last = x.data() + (n - rows) * hidden;
    ops::RmsNorm(last, w_.final_norm.data(), rows, hidden, eps, h.data());
    std::vector<float> logits(rows * c_.vocab_size);
    ops::Linear(h.data(), w_.output_projection().data(), nullptr, rows, hidden, c_.vocab_size,
                logits.data());
    return logits;
  }

  ModelConfig c_;
  ModelWeights w_;
  std::vector<float> inv_freq_;
};

}  // namespace

std::unique_ptr<Engine> MakeCpuEngine(const ModelConfig& config, ModelWeights weights) {
  return std::make_unique<CpuEngine>(config, std::move(weights));
}

}  // namespace kvcomm::runtime::internal
