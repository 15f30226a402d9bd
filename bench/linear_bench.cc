// linear_bench: the linear layers of a Llama-3-8B-shaped model (bf16) over a few rows, as decode
// (1 row) and a reusing turn's gaps (a cue and a label: a few to 16 rows) run them, through
// cuBLAS and, for 1 row, through our GEMV kernel. At these sizes a layer is bound
// by reading its weights, so each rate is weight bytes read per second, next to what a
// device-to-device copy reaches in the same run (its read + write bytes). Each layer alone is
// timed with its launch; then 32 decoder layers' four linear layers back to back, as a forward
// pass issues them, where one launch overlaps the kernel before it.
//   linear_bench [--rows 1 2 3 4 6 8 12 16 32] [--repeat 50]
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench/cuda_timing.h"
#include "kernels/cuda/blas.h"
#include "kernels/cuda/launchers.h"
#include "kernels/device.h"

using namespace kvcomm;
namespace cu = kvcomm::kernels::cuda;

namespace {

struct Layer {
  const char* name;
  int64_t in, out;
};
// Per decoder layer (fused qkv and gate/up projections, as the runtime holds them), and the head.
constexpr Layer kLayers[] = {{"qkv", 4096, 6144},
                             {"o", 4096, 4096},
                             {"gate_up", 4096, 28672},
                             {"down", 14336, 4096},
                             {"lm_head", 4096, 128256}};

void FillRandom(std::byte* device, int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 0.02f);
  std::vector<cu::bf16> host(count);
  for (auto& v : host) v = __float2bfloat16(normal(rng));
  cudaMemcpy(device, host.data(), count * sizeof(cu::bf16), cudaMemcpyHostToDevice);
}

void Require(bool ok, const std::string& what) {
  if (ok) return;
  std::fprintf(stderr, "linear_bench: %s\n", what.c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"linear_bench: Llama-3-8B linear layers over a few rows, cuBLAS and our GEMV"};
  std::vector<int64_t> row_counts{1, 2, 3, 4, 6, 8, 12, 16, 32};
  int repeat = 50;
  app.add_option("--rows", row_counts, "rows (tokens) per call")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  app.add_option("--repeat", repeat)->check(CLI::Range(1, 10000));
  CLI11_PARSE(app, argc, argv);
  if (!kernels::CudaAvailable()) {
    std::fprintf(stderr, "linear_bench: %s\n", kernels::CudaDeviceDescription().c_str());
    return 1;
  }
  std::vector<kernels::DeviceBuffer> keep;
  int64_t max_rows = 0, max_in = 0, max_weights = 0;
  for (int64_t r : row_counts) max_rows = std::max(max_rows, r);
  for (const Layer& l : kLayers) {
    max_in = std::max(max_in, l.in);
    max_weights = std::max(max_weights, l.in * l.out);
  }
  // Weights for several calls in a row, each reading other bytes (as each layer of a model does),
  // so that the smaller layers are not served from L2.
  const int64_t pool_bytes = std::max<int64_t>(max_weights * 2, int64_t{1} << 30);
  std::byte* w = bench::DeviceAlloc("linear_bench", keep, pool_bytes);
  std::byte* x = bench::DeviceAlloc("linear_bench", keep, max_rows * max_in * 2);
  std::byte* y = bench::DeviceAlloc("linear_bench", keep, max_rows * 128256 * 4);
  FillRandom(w, pool_bytes / 2, 1);
  FillRandom(x, max_rows * max_in, 2);
  auto blas = cu::Blas::Create();
  Require(blas.ok(), blas.ok() ? "" : blas.status().ToString());

  // The copy floor: 1 GiB device to device.
  const int64_t copy_bytes = int64_t{1} << 30;
  std::byte* copy_src = bench::DeviceAlloc("linear_bench", keep, copy_bytes);
  std::byte* copy_dst = bench::DeviceAlloc("linear_bench", keep, copy_bytes);
  const double copy_ms = bench::TimeMs(
      10, [&] { cudaMemcpyAsync(copy_dst, copy_src, copy_bytes, cudaMemcpyDeviceToDevice); });
  const double copy_gbs = 2.0 * copy_bytes / copy_ms / 1e6;
  std::printf("linear_bench: %s; bf16 weights and inputs, fp32 sums and output, median of %d\n",
              kernels::CudaDeviceDescription().c_str(), repeat);
  std::printf("device-to-device copy of 1 GiB: %.3f ms, %.0f GB/s (read + write)\n\n", copy_ms,
              copy_gbs);
  std::printf("| layer | in x out | rows | cuBLAS ms | GB/s | gemv ms | GB/s |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  const auto* xb = reinterpret_cast<const cu::bf16*>(x);
  for (const Layer& l : kLayers) {
    const double bytes = 2.0 * l.in * l.out;
    const auto rate = [&](double ms) { return bytes / ms / 1e6; };
    const int64_t slots = pool_bytes / static_cast<int64_t>(bytes);
    int64_t call = 0;
    const auto next_weights = [&] {
      return reinterpret_cast<const cu::bf16*>(w) + (call++ % slots) * l.in * l.out;
    };
    for (int64_t rows : row_counts) {
      const double blas_ms = bench::TimeMs(repeat, [&] {
        Require((*blas)->Linear(xb, next_weights(), rows, l.in, l.out, y, true, 0.f).ok(),
                "cuBLAS failed");
      });
      std::printf("| %s | %lld x %lld | %lld | %.4f | %.0f |", l.name, static_cast<long long>(l.in),
                  static_cast<long long>(l.out), static_cast<long long>(rows), blas_ms,
                  rate(blas_ms));
      if (rows == 1) {
        const double ms = bench::TimeMs(repeat, [&] {
          Require(
              cu::LaunchGemv(next_weights(), xb, l.in, l.out, y, true, 0.f, nullptr) == cudaSuccess,
              "gemv failed");
        });
        std::printf(" %.4f | %.0f |\n", ms, rate(ms));
      } else {
        std::printf(" - | - |\n");
      }
    }
  }

  // 32 decoder layers back to back; each layer's weights lie elsewhere in the pool.
  constexpr int kDecoderLayers = 32;
  constexpr int kLayerLinears = 4;  // qkv, o, gate_up, down
  int64_t layer_bytes = 0;
  for (int i = 0; i < kLayerLinears; ++i) layer_bytes += 2 * kLayers[i].in * kLayers[i].out;
  const int64_t layer_slots = pool_bytes / layer_bytes;
  const auto stack = [&](int64_t rows, bool gemv) {
    for (int layer = 0; layer < kDecoderLayers; ++layer) {
      const auto* base =
          reinterpret_cast<const cu::bf16*>(w) + (layer % layer_slots) * (layer_bytes / 2);
      for (int i = 0; i < kLayerLinears; ++i) {
        const Layer& l = kLayers[i];
        const bool ok =
            gemv ? cu::LaunchGemv(base, xb, l.in, l.out, y, true, 0.f, nullptr) == cudaSuccess
                 : (*blas)->Linear(xb, base, rows, l.in, l.out, y, true, 0.f).ok();
        Require(ok, gemv ? "gemv failed" : "cuBLAS failed");
        base += l.in * l.out;
      }
    }
  };
  std::printf("\n%d decoder layers' linear layers back to back (%.0f MB of weights):\n\n",
              kDecoderLayers, kDecoderLayers * layer_bytes / 1e6);
  std::printf("| rows | cuBLAS ms | GB/s | gemv ms | GB/s |\n|---|---|---|---|---|\n");
  const double stack_bytes = static_cast<double>(kDecoderLayers) * layer_bytes;
  for (int64_t rows : row_counts) {
    const double blas_ms = bench::TimeMs(repeat, [&] { stack(rows, false); });
    std::printf("| %lld | %.3f | %.0f |", static_cast<long long>(rows), blas_ms,
                stack_bytes / blas_ms / 1e6);
    if (rows == 1) {
      const double ms = bench::TimeMs(repeat, [&] { stack(rows, true); });
      std::printf(" %.3f | %.0f |\n", ms, stack_bytes / ms / 1e6);
    } else {
      std::printf(" - | - |\n");
    }
  }
  return 0;
}
