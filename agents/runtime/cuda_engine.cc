// The CUDA backend: bf16 weights and KV cache in device memory, cuBLAS GEMMs with fp32
// accumulation, an fp32 residual stream, and the kernels of kernels/cuda. Prefill runs in chunks;
// attention over more than a few new tokens runs on tensor cores (flash attention, head_dim 128)
// or else through batched GEMMs (scores, causal softmax, probabilities x values) per kv head;
// decode runs its attention on the same kernel with a kv group's heads packed into one CTA
// (or a split-key online-softmax kernel without flash attention) and GEMV for the linear layers.
#include <cmath>

#include "agents/runtime/internal/engine.h"
#include "kernels/cuda/blas.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launchers.h"
#include "kernels/ops.h"

namespace kvcomm::runtime::internal {
namespace {

namespace cu = kernels::cuda;
using cu::bf16;

constexpr int64_t kChunkTokens = 4096;  // prefill chunk
// At most this many new tokens take the streaming attention kernel, unless the tensor-core
// kernel packs a kv group's heads into one CTA or can split a long cache's keys for them
// (bench/RESULTS.md, runtime_bench).
constexpr int64_t kStreamingMaxTokens = 8;

struct LayerPtrs {
  bf16 *input_norm, *qkv, *qkv_bias, *o, *post_norm, *gate_up, *down;
};

class CudaEngine final : public Engine {
 public:
  explicit CudaEngine(const ModelConfig& config) : c_(config) {}

  Status Init(const ModelWeights* weights, uint64_t seed) {
    KVCOMM_ASSIGN_OR_RETURN(blas_, cu::Blas::Create());
    const int64_t hidden = c_.hidden_size, q_dim = c_.num_heads * c_.head_dim,
                  kv_dim = c_.num_kv_heads * c_.head_dim;
    qkv_dim_ = q_dim + 2 * kv_dim;
    const int64_t inter = c_.intermediate_size, vocab = c_.vocab_size;
    // Lay out every tensor in one arena; element offsets first, pointers once allocated.
    std::vector<std::pair<bf16**, int64_t>> tensors;
    int64_t total = 0;
    auto place = [&](bf16** ptr, int64_t n) {
      tensors.emplace_back(ptr, total);
      total += (n + 127) / 128 * 128;  // 256-byte alignment
    };
    place(&embed_, vocab * hidden);
    layers_.resize(c_.num_layers);
    for (auto& l : layers_) {
      place(&l.input_norm, hidden);
      place(&l.qkv, qkv_dim_ * hidden);
      l.qkv_bias = nullptr;
      if (c_.attention_bias) place(&l.qkv_bias, qkv_dim_);
      place(&l.o, hidden * q_dim);
      place(&l.post_norm, hidden);
      place(&l.gate_up, 2 * inter * hidden);
      place(&l.down, hidden * inter);
    }
    place(&final_norm_, hidden);
    lm_head_ = nullptr;
    if (!c_.tie_word_embeddings) place(&lm_head_, vocab * hidden);
    KVCOMM_ASSIGN_OR_RETURN(arena_, kernels::DeviceBuffer::Allocate(total * 2));
    for (auto& [ptr, offset] : tensors) *ptr = reinterpret_cast<bf16*>(arena_.data()) + offset;
    if (lm_head_ == nullptr) lm_head_ = embed_;

    const std::vector<float> inv_freq = c_.RopeInverseFrequencies();
    KVCOMM_ASSIGN_OR_RETURN(inv_freq_, kernels::DeviceBuffer::Allocate(inv_freq.size() * 4));
    KVCOMM_RETURN_IF_ERROR(
        kernels::CopyHostToDevice(inv_freq_.data(), inv_freq.data(), inv_freq.size() * 4));
    return weights != nullptr ? Upload(*weights) : FillRandom(seed);
  }

  Device device() const override { return Device::kCuda; }

  Result<std::vector<float>> Forward(std::span<const int32_t> tokens, int64_t start, KvCache& cache,
                                     bool all_logits, QueryCapture*) override {
    const int64_t n = static_cast<int64_t>(tokens.size());
    std::vector<float> logits;
    for (int64_t done = 0; done < n;) {
      const int64_t chunk = std::min(kChunkTokens, n - done);
      const bool last = done + chunk == n;
      const RowRun run{0, chunk, start + done};
      KVCOMM_RETURN_IF_ERROR(ForwardChunk(tokens.subspan(done, chunk), std::span(&run, 1), cache,
                                          last ? (all_logits ? chunk : 1) : 0, &logits,
                                          all_logits));
      done += chunk;
    }
    return logits;
  }

  Result<std::vector<float>> ForwardRuns(std::span<const Model::TokenRun> runs,
                                         KvCache& cache) override {
    std::vector<int32_t> tokens;
    const std::vector<RowRun> rows = ConcatenateRuns(runs, &tokens);
    if (static_cast<int64_t>(tokens.size()) > kChunkTokens)  // long gaps: one chunk each
      return Engine::ForwardRuns(runs, cache);
    std::vector<float> logits;
    KVCOMM_RETURN_IF_ERROR(ForwardChunk(tokens, rows, cache, 1, &logits, false));
    return logits;
  }

 private:
  Status Upload(const ModelWeights& w) {
    auto put = [](bf16* to, std::initializer_list<const std::vector<float>*> parts) -> Status {
      std::vector<uint16_t> staging;
      for (const auto* p : parts) {
        const size_t at = staging.size();
        staging.resize(at + p->size());
        KVCOMM_RETURN_IF_ERROR(kernels::ConvertDType(
            {const_cast<float*>(p->data()), DType::kF32, {int64_t(p->size())}},
            {staging.data() + at, DType::kBF16, {int64_t(p->size())}}));
      }
      return kernels::CopyHostToDevice(to, staging.data(), staging.size() * 2);
    };
    KVCOMM_RETURN_IF_ERROR(put(embed_, {&w.embed}));
    for (int64_t i = 0; i < c_.num_layers; ++i) {
      const LayerWeights& l = w.layers[i];
      LayerPtrs& p = layers_[i];
      KVCOMM_RETURN_IF_ERROR(put(p.input_norm, {&l.input_norm}));
      KVCOMM_RETURN_IF_ERROR(put(p.qkv, {&l.q, &l.k, &l.v}));
      if (p.qkv_bias != nullptr)
        KVCOMM_RETURN_IF_ERROR(put(p.qkv_bias, {&l.q_bias, &l.k_bias, &l.v_bias}));
      KVCOMM_RETURN_IF_ERROR(put(p.o, {&l.o}));
      KVCOMM_RETURN_IF_ERROR(put(p.post_norm, {&l.post_norm}));
      KVCOMM_RETURN_IF_ERROR(put(p.gate_up, {&l.gate, &l.up}));
      KVCOMM_RETURN_IF_ERROR(put(p.down, {&l.down}));
    }
    KVCOMM_RETURN_IF_ERROR(put(final_norm_, {&w.final_norm}));
    if (!w.lm_head.empty()) KVCOMM_RETURN_IF_ERROR(put(lm_head_, {&w.lm_head}));
    return Status::Ok();
  }

  Status FillRandom(uint64_t seed) {
    const int64_t hidden = c_.hidden_size, q_dim = c_.num_heads * c_.head_dim,
                  inter = c_.intermediate_size;
    uint64_t stream = seed * 1000;
    auto fill = [&](bf16* p, int64_t n, float std, float mean) -> Status {
      KVCOMM_CUDA_RETURN_IF_ERROR(cu::LaunchFillRandom(p, n, ++stream, std, mean, nullptr));
      return Status::Ok();
    };
    KVCOMM_RETURN_IF_ERROR(fill(embed_, c_.vocab_size * hidden, 0.02f, 0));
    for (auto& l : layers_) {
      KVCOMM_RETURN_IF_ERROR(fill(l.input_norm, hidden, 0, 1));
      KVCOMM_RETURN_IF_ERROR(fill(l.qkv, qkv_dim_ * hidden, 0.02f, 0));
      if (l.qkv_bias != nullptr) KVCOMM_RETURN_IF_ERROR(fill(l.qkv_bias, qkv_dim_, 0.02f, 0));
      KVCOMM_RETURN_IF_ERROR(fill(l.o, hidden * q_dim, 0.02f, 0));
      KVCOMM_RETURN_IF_ERROR(fill(l.post_norm, hidden, 0, 1));
      KVCOMM_RETURN_IF_ERROR(fill(l.gate_up, 2 * inter * hidden, 0.02f, 0));
      KVCOMM_RETURN_IF_ERROR(fill(l.down, hidden * inter, 0.02f, 0));
    }
    KVCOMM_RETURN_IF_ERROR(fill(final_norm_, hidden, 0, 1));
    if (lm_head_ != embed_)
      KVCOMM_RETURN_IF_ERROR(fill(lm_head_, c_.vocab_size * hidden, 0.02f, 0));
    KVCOMM_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
    return Status::Ok();
  }

  // One chunk through every layer, its rows at the runs' positions (ascending); `logit_rows` of
  // its last rows get logits (0: none). Every layer writes all runs' KV before any run's
  // attention, so a run sees the ones before it.
  Status ForwardChunk(std::span<const int32_t> tokens, std::span<const RowRun> runs, KvCache& cache,
                      int64_t logit_rows, std::vector<float>* logits, bool append) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    const int64_t hidden = c_.hidden_size, heads = c_.num_heads, kv_heads = c_.num_kv_heads,
                  hd = c_.head_dim;
    const int64_t q_dim = heads * hd, inter = c_.intermediate_size;
    const float eps = static_cast<float>(c_.rms_norm_eps),
                scale = 1.0f / std::sqrt(static_cast<float>(hd));

    const std::vector<int32_t> positions = RowPositions(runs, n);
    KVCOMM_ASSIGN_OR_RETURN(auto* ids_d, ids_.Reserve(n * 8));
    auto* positions_d = ids_d + n * 4;
    KVCOMM_RETURN_IF_ERROR(kernels::CopyHostToDevice(ids_d, tokens.data(), n * 4));
    KVCOMM_RETURN_IF_ERROR(kernels::CopyHostToDevice(positions_d, positions.data(), n * 4));
    KVCOMM_ASSIGN_OR_RETURN(auto* x_raw, x_.Reserve(n * hidden * 4));
    KVCOMM_ASSIGN_OR_RETURN(auto* h_raw, h_.Reserve(n * hidden * 2));
    KVCOMM_ASSIGN_OR_RETURN(auto* qkv_raw, qkv_.Reserve(n * qkv_dim_ * 2));
    KVCOMM_ASSIGN_OR_RETURN(auto* attn_raw, attn_.Reserve(n * q_dim * 2));
    KVCOMM_ASSIGN_OR_RETURN(auto* gu_raw, gate_up_.Reserve(n * 2 * inter * 2));
    float* x = reinterpret_cast<float*>(x_raw);
    bf16* h = reinterpret_cast<bf16*>(h_raw);
    bf16* qkv = reinterpret_cast<bf16*>(qkv_raw);
    bf16* attn = reinterpret_cast<bf16*>(attn_raw);
    bf16* gate_up = reinterpret_cast<bf16*>(gu_raw);
    bf16* act = qkv;  // the MLP reuses the qkv buffer when it is large enough
    if (qkv_dim_ < inter) {
      KVCOMM_ASSIGN_OR_RETURN(auto* act_raw, act_.Reserve(n * inter * 2));
      act = reinterpret_cast<bf16*>(act_raw);
    }

    KVCOMM_CUDA_RETURN_IF_ERROR(
        cu::LaunchEmbedding(embed_, reinterpret_cast<int32_t*>(ids_d), n, hidden, x, nullptr));
    for (int64_t layer = 0; layer < c_.num_layers; ++layer) {
      const LayerPtrs& w = layers_[layer];
      auto* k_cache = reinterpret_cast<bf16*>(cache.device_keys(layer));
      auto* v_cache = reinterpret_cast<bf16*>(cache.device_values(layer));
      KVCOMM_CUDA_RETURN_IF_ERROR(cu::LaunchRmsNorm(x, w.input_norm, n, hidden, eps, h, nullptr));
      KVCOMM_RETURN_IF_ERROR(Linear(h, w.qkv, n, hidden, qkv_dim_, qkv, false));
      if (w.qkv_bias != nullptr)
        KVCOMM_CUDA_RETURN_IF_ERROR(cu::LaunchAddBias(qkv, w.qkv_bias, n, qkv_dim_, nullptr));
      KVCOMM_CUDA_RETURN_IF_ERROR(cu::LaunchRope(
          qkv, n, qkv_dim_, heads, kv_heads, hd, reinterpret_cast<int32_t*>(positions_d),
          reinterpret_cast<float*>(inv_freq_.data()), nullptr));
      for (const RowRun& run : runs)
        KVCOMM_CUDA_RETURN_IF_ERROR(cu::LaunchWriteKv(qkv + run.row * qkv_dim_, run.rows, qkv_dim_,
                                                      heads, kv_heads, hd, k_cache, v_cache,
                                                      cache.capacity(), run.start, nullptr));
      for (const RowRun& run : runs)
        KVCOMM_RETURN_IF_ERROR(Attention(qkv + run.row * qkv_dim_, run.rows, run.start, k_cache,
                                         v_cache, cache.capacity(), scale, attn + run.row * q_dim));
      KVCOMM_RETURN_IF_ERROR(Linear(attn, w.o, n, q_dim, hidden, x, true, 1.0f));  // x += o
      KVCOMM_CUDA_RETURN_IF_ERROR(cu::LaunchRmsNorm(x, w.post_norm, n, hidden, eps, h, nullptr));
      KVCOMM_RETURN_IF_ERROR(Linear(h, w.gate_up, n, hidden, 2 * inter, gate_up, false));
      KVCOMM_CUDA_RETURN_IF_ERROR(cu::LaunchSwiGlu(gate_up, n, inter, act, nullptr));
      KVCOMM_RETURN_IF_ERROR(Linear(act, w.down, n, inter, hidden, x, true, 1.0f));  // x += down
    }
    if (logit_rows == 0) return Status::Ok();
    const float* last = x + (n - logit_rows) * hidden;
    KVCOMM_CUDA_RETURN_IF_ERROR(
        cu::LaunchRmsNorm(last, final_norm_, logit_rows, hidden, eps, h, nullptr));
    KVCOMM_ASSIGN_OR_RETURN(auto* logits_raw, logits_.Reserve(logit_rows * c_.vocab_size * 4));
    KVCOMM_RETURN_IF_ERROR(
        Linear(h, lm_head_, logit_rows, hidden, c_.vocab_size, logits_raw, true));
    const size_t at = append ? logits->size() : 0;
    logits->resize(at + logit_rows * c_.vocab_size);
    return kernels::CopyDeviceToHost(logits->data() + at, logits_raw,
                                     logit_rows * c_.vocab_size * 4);
  }

  // Decode (one row) is memory-bound: a GEMV kernel streams the weights at close to HBM
  // bandwidth, where cuBLAS picks a slower path for m = 1.
  Status Linear(const bf16* x, const bf16* w, int64_t rows, int64_t in, int64_t out, void* y,
                bool y_fp32, float beta = 0.0f) {
    if (rows == 1 && in % 8 == 0) {
      KVCOMM_CUDA_RETURN_IF_ERROR(cu::LaunchGemv(w, x, in, out, y, y_fp32, beta, nullptr));
      return Status::Ok();
    }
    return blas_->Linear(x, w, rows, in, out, y, y_fp32, beta);
  }

  Status Attention(const bf16* qkv, int64_t n, int64_t start, const bf16* k_cache,
                   const bf16* v_cache, int64_t capacity, float scale, bf16* out) {
    const int64_t heads = c_.num_heads, kv_heads = c_.num_kv_heads, hd = c_.head_dim,
                  group = heads / kv_heads;
    const bool flash = cu::FlashAttentionSupports(hd);
    const bool packed = flash && cu::FlashAttentionPacksGroups(n, heads, kv_heads);
    const int64_t split_floats =
        flash ? cu::FlashAttentionSplitFloats(n, start, heads, kv_heads) : 0;
    if (!packed && (n == 1 || (split_floats == 0 && n <= kStreamingMaxTokens))) {
      const int64_t partial_floats = cu::AttentionStreamingPartialFloats(n, start, heads, hd);
      float* partials = nullptr;
      if (partial_floats > 0) {
        KVCOMM_ASSIGN_OR_RETURN(auto* raw, partials_.Reserve(partial_floats * 4));
        partials = reinterpret_cast<float*>(raw);
      }
      KVCOMM_CUDA_RETURN_IF_ERROR(
          cu::LaunchAttentionStreaming(qkv, qkv_dim_, n, start, heads, kv_heads, hd, k_cache,
                                       v_cache, capacity, scale, out, partials, nullptr));
      return Status::Ok();
    }
    if (flash) {
      // A few new tokens over a long cache split the keys over several CTAs per head.
      float* workspace = nullptr;
      if (split_floats > 0) {
        KVCOMM_ASSIGN_OR_RETURN(auto* raw, partials_.Reserve(split_floats * 4));
        workspace = reinterpret_cast<float*>(raw);
      }
      KVCOMM_CUDA_RETURN_IF_ERROR(cu::LaunchFlashAttention(qkv, qkv_dim_, n, start, heads, kv_heads,
                                                           hd, k_cache, v_cache, capacity, scale,
                                                           out, workspace, nullptr));
      return Status::Ok();
    }
    const int64_t ctx = start + n;  // keys visible to the last query
    KVCOMM_ASSIGN_OR_RETURN(auto* q_raw, q_heads_.Reserve(heads * n * hd * 2));
    KVCOMM_ASSIGN_OR_RETURN(auto* o_raw, o_heads_.Reserve(heads * n * hd * 2));
    KVCOMM_ASSIGN_OR_RETURN(auto* s_raw, scores_.Reserve(group * n * ctx * 4));
    KVCOMM_ASSIGN_OR_RETURN(auto* p_raw, probs_.Reserve(group * n * ctx * 2));
    bf16* q_heads = reinterpret_cast<bf16*>(q_raw);
    bf16* o_heads = reinterpret_cast<bf16*>(o_raw);
    float* scores = reinterpret_cast<float*>(s_raw);
    bf16* probs = reinterpret_cast<bf16*>(p_raw);
    KVCOMM_CUDA_RETURN_IF_ERROR(cu::LaunchGatherQ(qkv, qkv_dim_, n, heads, hd, q_heads, nullptr));
    for (int64_t g = 0; g < kv_heads; ++g) {
      const bf16* q = q_heads + g * group * n * hd;
      const bf16* k = k_cache + g * capacity * hd;
      const bf16* v = v_cache + g * capacity * hd;
      KVCOMM_RETURN_IF_ERROR(
          blas_->BatchedABt(q, n * hd, k, 0, scores, n * ctx, n, ctx, hd, hd, group));
      KVCOMM_CUDA_RETURN_IF_ERROR(
          cu::LaunchCausalSoftmax(scores, group, n, ctx, start, scale, probs, nullptr));
      KVCOMM_RETURN_IF_ERROR(blas_->BatchedAB(probs, n * ctx, v, 0, o_heads + g * group * n * hd,
                                              n * hd, n, hd, ctx, group));
    }
    KVCOMM_CUDA_RETURN_IF_ERROR(cu::LaunchScatterO(o_heads, n, heads, hd, out, nullptr));
    return Status::Ok();
  }

  ModelConfig c_;
  int64_t qkv_dim_ = 0;
  std::unique_ptr<cu::Blas> blas_;
  kernels::DeviceBuffer arena_, inv_freq_;
  bf16 *embed_ = nullptr, *final_norm_ = nullptr, *lm_head_ = nullptr;
  std::vector<LayerPtrs> layers_;
  // Workspace, grown as calls need (kernels::Allocation::Reserve).
  kernels::DeviceBuffer ids_, x_, h_, qkv_, attn_, gate_up_, act_, q_heads_, o_heads_, scores_,
      probs_, logits_, partials_;
};

}  // namespace

Result<std::unique_ptr<Engine>> MakeCudaEngine(const ModelConfig& config,
                                               const ModelWeights* weights, uint64_t seed) {
  if (!kernels::CudaAvailable()) {
    return Error(ErrorCode::kUnavailable, "no CUDA backend: {}", kernels::CudaDeviceDescription());
  }
  auto engine = std::make_unique<CudaEngine>(config);
  KVCOMM_RETURN_IF_ERROR(engine->Init(weights, seed));
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace kvcomm::runtime::internal
