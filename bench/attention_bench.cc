// attention_bench: the prefill attention kernel alone, at one layer of a Llama-3-8B-shaped model
// (32 query heads, 8 kv heads, head dim 128, bf16), causal over N tokens computed in the
// runtime's 4096-query chunks. Prints the time per layer and the attention math rate
// (4 * head_dim FLOPs per query head and visible (query, key) pair: QK^T and PV), for each
// kernel this GPU can run (mma.sync everywhere, wgmma on Hopper).
//   attention_bench [--tokens 1024 4096 16384] [--repeat 20]
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "bench/cuda_timing.h"
#include "kernels/cuda/launchers.h"
#include "kernels/device.h"

using namespace kvcomm;
namespace cu = kvcomm::kernels::cuda;

namespace {

constexpr int64_t kHeads = 32, kKvHeads = 8, kHeadDim = 128;

// Random bf16 values in [-2, 2): attention over random data is as costly as over real data.
void FillRandom(std::byte* device, int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-2.f, 2.f);
  std::vector<cu::bf16> host(count);
  for (auto& x : host) x = __float2bfloat16(uniform(rng));
  cudaMemcpy(device, host.data(), count * sizeof(cu::bf16), cudaMemcpyHostToDevice);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"attention_bench: the flash attention prefill kernel at Llama-3-8B attention shape"};
  std::vector<int64_t> token_counts{1024, 4096, 16384};
  int repeat = 20;
  int64_t chunk = 4096;
  app.add_option("--tokens", token_counts, "context lengths (causal prefill from position 0)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--repeat", repeat)->check(CLI::Range(1, 1000));
  app.add_option("--chunk", chunk, "queries per launch (the runtime's prefill chunk: 4096)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  CLI11_PARSE(app, argc, argv);
  if (!kernels::CudaAvailable()) {
    std::fprintf(stderr, "attention_bench: %s\n", kernels::CudaDeviceDescription().c_str());
    return 1;
  }
  std::printf(
      "attention_bench: %s; %lld heads / %lld kv heads, head dim %lld, bf16, causal, "
      "%lld-query chunks, median of %d\n",
      kernels::CudaDeviceDescription().c_str(), static_cast<long long>(kHeads),
      static_cast<long long>(kKvHeads), static_cast<long long>(kHeadDim),
      static_cast<long long>(chunk), repeat);
  using Launcher = decltype(&cu::LaunchFlashAttention);
  std::vector<std::pair<const char*, Launcher>> kernels = {
      {"mma.sync", cu::LaunchFlashAttentionMmaSync}};
  if (cu::FlashAttentionWgmmaAvailable()) {
    kernels.push_back({"wgmma", cu::LaunchFlashAttentionWgmma});
  }
  std::printf("%-10s %10s %14s %10s\n", "kernel", "tokens", "ms per layer", "TFLOP/s");
  const int64_t qkv_dim = (kHeads + 2 * kKvHeads) * kHeadDim;
  const float scale = 1.f / std::sqrt(static_cast<float>(kHeadDim));
  for (int64_t n : token_counts) {
    std::vector<kernels::DeviceBuffer> keep;
    const int64_t chunk_rows = std::min(n, chunk);
    auto* qkv = bench::DeviceAlloc("attention_bench", keep, n * qkv_dim * sizeof(cu::bf16));
    auto* k = bench::DeviceAlloc("attention_bench", keep, kKvHeads * n * kHeadDim * 2);
    auto* v = bench::DeviceAlloc("attention_bench", keep, kKvHeads * n * kHeadDim * 2);
    auto* out = bench::DeviceAlloc("attention_bench", keep, chunk_rows * kHeads * kHeadDim * 2);
    FillRandom(qkv, n * qkv_dim, 1);
    FillRandom(k, kKvHeads * n * kHeadDim, 2);
    FillRandom(v, kKvHeads * n * kHeadDim, 3);
    for (auto [name, launch] : kernels) {
      cudaError_t error = cudaSuccess;
      const double ms = bench::TimeMs(repeat, [&] {
        for (int64_t start = 0; start < n; start += chunk) {
          const int64_t rows = std::min(chunk, n - start);
          const cudaError_t e =
              launch(reinterpret_cast<const cu::bf16*>(qkv) + start * qkv_dim, qkv_dim, rows, start,
                     kHeads, kKvHeads, kHeadDim, reinterpret_cast<const cu::bf16*>(k),
                     reinterpret_cast<const cu::bf16*>(v), n, scale,
                     reinterpret_cast<cu::bf16*>(out), nullptr, nullptr);
          if (e != cudaSuccess) error = e;
        }
      });
      if (error == cudaSuccess) error = cudaDeviceSynchronize();
      if (error != cudaSuccess) {
        std::fprintf(stderr, "attention_bench: %s: %s\n", name, cudaGetErrorString(error));
        return 1;
      }
      const double pairs = static_cast<double>(n) * (n + 1) / 2;  // visible (query, key) pairs
      const double flops = 4.0 * kHeadDim * kHeads * pairs;
      std::printf("%-10s %10lld %14.3f %10.1f\n", name, static_cast<long long>(n), ms,
                  flops / (ms * 1e-3) / 1e12);
    }
  }
  return 0;
}
