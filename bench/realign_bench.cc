// realign_bench (GPU): the realignment kernel (RoPE re-rotation + blend over anchors, one pass)
// on a Llama-3-8B-shaped segment in bf16, against the HBM floor: a device-to-device copy of the
// same number of bytes (read + write), timed in the same run.
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "bench/cuda_timing.h"
#include "kernels/cuda/launchers.h"
#include "kernels/device.h"

using namespace kvcomm::kernels;

namespace {

std::byte* Alloc(std::vector<DeviceBuffer>& keep, size_t bytes) {
  return kvcomm::bench::DeviceAlloc("realign_bench", keep, bytes);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"realign_bench: realignment kernel vs the HBM copy floor"};
  int64_t tokens = 1024;
  int repeat = 20;
  app.add_option("--tokens", tokens, "segment tokens")->check(CLI::Range(1, 1 << 20));
  app.add_option("--repeat", repeat)->check(CLI::Range(1, 1000));
  CLI11_PARSE(app, argc, argv);
  if (!CudaAvailable()) {
    std::fprintf(stderr, "realign_bench: needs a CUDA GPU (%s)\n", CudaDeviceDescription().c_str());
    return 1;
  }
  const int64_t layers = 32, kv_heads = 8, head_dim = 128;
  const int64_t elements = layers * 2 * kv_heads * tokens * head_dim;
  const size_t segment_bytes = elements * 2;
  std::printf(
      "realign_bench: %s, segment of %lld tokens in Llama-3-8B KV shape (32 x 8 x 128, bf16) = "
      "%.1f MiB\n",
      CudaDeviceDescription().c_str(), static_cast<long long>(tokens), segment_bytes / 1048576.0);
  std::printf("%-8s %12s %12s %14s %16s %14s\n", "anchors", "bytes moved", "kernel ms",
              "kernel GB/s", "copy floor ms", "vs floor");
  for (int64_t anchors : {0, 1, 2, 4, 8}) {
    std::vector<DeviceBuffer> keep;
    auto* base = reinterpret_cast<cuda::bf16*>(Alloc(keep, segment_bytes));
    auto* out = reinterpret_cast<cuda::bf16*>(Alloc(keep, segment_bytes));
    auto* deltas =
        reinterpret_cast<cuda::bf16*>(Alloc(keep, std::max<size_t>(1, anchors * segment_bytes)));
    auto* positions = reinterpret_cast<int32_t*>(Alloc(keep, tokens * 4));
    auto* inv_freq = reinterpret_cast<float*>(Alloc(keep, head_dim / 2 * 4));
    auto* weights =
        reinterpret_cast<float*>(Alloc(keep, std::max<int64_t>(1, anchors * tokens) * 4));
    // Bytes that must cross HBM at least once: base and every delta read, the output written.
    const size_t moved = (1 + anchors) * segment_bytes + segment_bytes;
    auto* copy_src = Alloc(keep, moved / 2);
    auto* copy_dst = Alloc(keep, moved / 2);
    const double kernel_ms = kvcomm::bench::TimeMs(repeat, [&] {
      cuda::LaunchRealignKv(layers, kv_heads, tokens, head_dim, anchors, 1, false, base, positions,
                            positions, inv_freq, deltas, weights, weights, out, nullptr);
    });
    // A copy of moved/2 bytes reads and writes `moved` bytes in total.
    const double floor_ms = kvcomm::bench::TimeMs(
        repeat, [&] { cudaMemcpy(copy_dst, copy_src, moved / 2, cudaMemcpyDeviceToDevice); });
    std::printf("%-8lld %10.1f MB %12.3f %14.0f %16.3f %13.2fx\n", static_cast<long long>(anchors),
                moved / 1e6, kernel_ms, moved / kernel_ms / 1e6, floor_ms, kernel_ms / floor_ms);
  }
  return 0;
}
