// compress_speed (GPU): SnapKV-style compression of a long bf16 cache on the GPU, scoring +
// selection + compaction, against the bytes-moved floor at the HBM bandwidth measured in the
// same run (a device-to-device copy). Also group quantization (KIVI's primitive) of the whole
// cache against its floor.
//
// Per layer: window queries x keys (one batched GEMM over the kv heads, fp32 logits), softmax
// statistics per query, column sums per kv head, max-pooling, the window forced in, per-head
// top-k, and the gather of the kept K and V rows. The floor reads every key once (scoring)
// plus the kept K and V rows, and writes the kept rows.
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <functional>
#include <vector>

#include "bench/cuda_timing.h"
#include "kernels/cuda/blas.h"
#include "kernels/cuda/launchers.h"
#include "kernels/device.h"

using namespace kvcomm::kernels;

namespace {

void CheckCuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "compress_speed: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

void CheckStatus(const kvcomm::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "compress_speed: %s\n", s.ToString().c_str());
    std::exit(1);
  }
}

std::byte* Alloc(std::vector<DeviceBuffer>& keep, size_t bytes) {
  return kvcomm::bench::DeviceAlloc("compress_speed", keep, bytes);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"compress_speed: GPU KV compression against the HBM floor"};
  int64_t tokens = 32768, layers = 32, kv_heads = 8, q_heads = 32, head_dim = 128, window = 32;
  int64_t keep_percent = 25;
  int repeat = 10;
  app.add_option("--tokens", tokens)->check(CLI::Range(64, 1 << 20));
  app.add_option("--layers", layers)->check(CLI::Range(1, 256));
  app.add_option("--keep-percent", keep_percent)->check(CLI::Range(1, 100));
  app.add_option("--repeat", repeat)->check(CLI::Range(1, 1000));
  CLI11_PARSE(app, argc, argv);
  if (!CudaAvailable()) {
    std::fprintf(stderr, "compress_speed: needs a CUDA GPU (%s)\n",
                 CudaDeviceDescription().c_str());
    return 1;
  }
  using cuda::bf16;
  const int64_t group = q_heads / kv_heads, rows = group * window;
  const int64_t keep = std::max(window, tokens * keep_percent / 100);
  const int64_t half = kv_heads * tokens * head_dim;  // elements of K (or V) in one layer
  std::vector<DeviceBuffer> buffers;
  auto* kv = reinterpret_cast<bf16*>(Alloc(buffers, layers * 2 * half * 2));
  auto* queries = reinterpret_cast<bf16*>(Alloc(buffers, layers * q_heads * window * head_dim * 2));
  auto* logits = reinterpret_cast<float*>(Alloc(buffers, kv_heads * rows * tokens * 4));
  auto* stats = reinterpret_cast<float2*>(Alloc(buffers, kv_heads * rows * 8));
  auto* raw = reinterpret_cast<float*>(Alloc(buffers, kv_heads * tokens * 4));
  auto* pooled = reinterpret_cast<float*>(Alloc(buffers, kv_heads * tokens * 4));
  auto* indices = reinterpret_cast<int32_t*>(Alloc(buffers, layers * kv_heads * keep * 4));
  auto* kept = reinterpret_cast<bf16*>(Alloc(buffers, layers * 2 * kv_heads * keep * head_dim * 2));
  CheckCuda(cuda::LaunchFillRandom(kv, layers * 2 * half, 11, 1.0f, 0.0f, nullptr), "fill kv");
  CheckCuda(cuda::LaunchFillRandom(queries, layers * q_heads * window * head_dim, 12, 1.0f, 0.0f,
                                   nullptr),
            "fill queries");
  auto blas = cuda::Blas::Create();
  CheckStatus(blas.status());
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));

  auto keys_of = [&](int64_t l) { return kv + l * 2 * half; };
  // Heads go through GEMM, statistics and column sums `heads_per_pass` at a time: fewer make
  // the logits workspace small enough to stay in L2 between the three steps.
  int64_t heads_per_pass = kv_heads;
  auto score = [&](int64_t l) {
    for (int64_t h = 0; h < kv_heads; h += heads_per_pass) {
      const int64_t n = std::min(heads_per_pass, kv_heads - h);
      CheckStatus((*blas)->BatchedABt(queries + (l * q_heads + h * group) * window * head_dim,
                                      rows * head_dim, keys_of(l) + h * tokens * head_dim,
                                      tokens * head_dim, logits, rows * tokens, rows, tokens,
                                      head_dim, head_dim, n));
      cuda::LaunchWindowSoftmaxStats(logits, n * rows, tokens, window, scale, stats, nullptr);
      cuda::LaunchWindowColumnSums(logits, stats, n, rows, tokens, window, scale, raw + h * tokens,
                                   nullptr);
    }
  };
  auto select = [&](int64_t l) {
    cuda::LaunchPool1D(raw, kv_heads, tokens, 7, true, pooled, nullptr);
    cuda::LaunchForceKeep(pooled, kv_heads, tokens, 0, window, nullptr);
    cuda::LaunchTopKPerRow(pooled, kv_heads, tokens, keep, indices + l * kv_heads * keep, nullptr);
  };
  auto compact = [&](int64_t l) {
    for (int half_index = 0; half_index < 2; ++half_index)
      cuda::LaunchGatherRows(keys_of(l) + half_index * half, kv_heads, tokens, head_dim,
                             indices + l * kv_heads * keep, keep,
                             kept + (l * 2 + half_index) * kv_heads * keep * head_dim, nullptr);
  };
  auto all_layers = [&](const std::function<void(int64_t)>& stage) {
    return [&, stage] {
      for (int64_t l = 0; l < layers; ++l) stage(l);
    };
  };
  std::vector<std::pair<int64_t, double>> score_by_pass;
  for (int64_t n = kv_heads; n >= 1; n /= 2) {
    heads_per_pass = n;
    score_by_pass.emplace_back(n, kvcomm::bench::TimeMs(repeat, all_layers(score)));
  }
  const auto best =
      *std::min_element(score_by_pass.begin(), score_by_pass.end(),
                        [](const auto& a, const auto& b) { return a.second < b.second; });
  heads_per_pass = best.first;
  const double score_ms = best.second;
  const double select_ms = kvcomm::bench::TimeMs(repeat, all_layers(select));
  const double compact_ms = kvcomm::bench::TimeMs(repeat, all_layers(compact));
  const double pipeline_ms = kvcomm::bench::TimeMs(repeat, all_layers([&](int64_t l) {
                                                     score(l);
                                                     select(l);
                                                     compact(l);
                                                   }));

  // HBM bandwidth: a device-to-device copy of 1 GiB (read + write).
  const size_t copy_bytes = size_t{1} << 30;
  std::byte* copy_from = Alloc(buffers, copy_bytes);
  std::byte* copy_to = Alloc(buffers, copy_bytes);
  const double copy_ms = kvcomm::bench::TimeMs(
      repeat, [&] { cudaMemcpyAsync(copy_to, copy_from, copy_bytes, cudaMemcpyDeviceToDevice); });
  const double bandwidth = 2.0 * copy_bytes / (copy_ms * 1e-3);  // bytes / s

  const double key_bytes = double(layers) * half * 2;
  const double kept_bytes = double(layers) * 2 * kv_heads * keep * head_dim * 2;
  const double floor_bytes = key_bytes + 2 * kept_bytes;
  auto floor_ms = [&](double bytes) { return bytes / bandwidth * 1e3; };

  // Group quantization of the whole cache (2-bit, groups of 32 values).
  const int64_t group_size = 32, groups = layers * 2 * half / group_size;
  auto* codes = reinterpret_cast<uint8_t*>(Alloc(buffers, groups * group_size * 2 / 8));
  auto* scales = reinterpret_cast<float*>(Alloc(buffers, groups * 4));
  auto* zeros = reinterpret_cast<float*>(Alloc(buffers, groups * 4));
  const double quantize_ms = kvcomm::bench::TimeMs(repeat, [&] {
    cuda::LaunchQuantizeGroups(kv, groups, group_size, 2, codes, scales, zeros, nullptr);
  });
  CheckCuda(cudaDeviceSynchronize(), "the timed kernels");
  CheckCuda(cudaGetLastError(), "the timed kernels");
  const double quantize_bytes =
      double(layers) * 2 * half * 2 + groups * group_size * 2 / 8.0 + groups * 8.0;

  std::printf(
      "compress_speed: %s; cache %lld layers x %lld kv heads x %lld tokens x %lld dims bf16 "
      "(%.2f GiB K+V), %lld query heads, window %lld, keep %lld tokens per head (%lld%%), "
      "median of %d runs.\nHBM: %.0f GB/s measured (1 GiB device-to-device copy).\n\n",
      CudaDeviceDescription().c_str(), (long long)layers, (long long)kv_heads, (long long)tokens,
      (long long)head_dim, 2 * key_bytes / (1 << 30), (long long)q_heads, (long long)window,
      (long long)keep, (long long)keep_percent, repeat, bandwidth / 1e9);
  std::printf("scoring by kv heads per pass:");
  for (const auto& [n, ms] : score_by_pass) std::printf(" %lld: %.2f ms;", (long long)n, ms);
  std::printf(" the table uses %lld.\n\n", (long long)heads_per_pass);
  std::printf(
      "| stage (all layers) | ms | bytes floor ms | x floor |\n| --- | --- | --- | --- |\n");
  std::printf("| score: window GEMM + softmax stats + column sums | %.2f | %.2f | %.1f |\n",
              score_ms, floor_ms(key_bytes), score_ms / floor_ms(key_bytes));
  std::printf("| select: max-pool 7 + window forced + top-k | %.2f | - | - |\n", select_ms);
  std::printf("| compact: gather kept K and V | %.2f | %.2f | %.1f |\n", compact_ms,
              floor_ms(2 * kept_bytes), compact_ms / floor_ms(2 * kept_bytes));
  std::printf("| snapkv pipeline (score + select + compact) | %.2f | %.2f | %.1f |\n", pipeline_ms,
              floor_ms(floor_bytes), pipeline_ms / floor_ms(floor_bytes));
  std::printf("| group quantization, 2-bit, groups of 32 (all K and V) | %.2f | %.2f | %.1f |\n",
              quantize_ms, floor_ms(quantize_bytes), quantize_ms / floor_ms(quantize_bytes));
  return 0;
}
