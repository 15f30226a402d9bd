// realign_bench (GPU): the realignment kernel (RoPE re-rotation + blend over anchors, one pass)
// on a Llama-3-8B-shaped segment in bf16, against the HBM floor: a device-to-device copy of the
// same number of bytes (read + write), timed in the same run. Then a placeholder's blend as
// kvcommd makes it (DeviceRealigner: weights and positions up, the kernel, the wait), host wall
// time against its kernel's time, for segments of the sizes a round of replies has.
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
#include "kernels/device_realign.h"

using namespace kvcomm::kernels;

namespace {

std::byte* Alloc(std::vector<DeviceBuffer>& keep, size_t bytes) {
  return kvcomm::bench::DeviceAlloc("realign_bench", keep, bytes);
}

// Median wall time of `op` on the host over `repeat` runs after one warm-up, in microseconds.
double HostMicros(int repeat, const std::function<void()>& op) {
  op();
  std::vector<double> times;
  for (int r = 0; r < repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    op();
    times.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
            .count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void PrintBlendCalls(int64_t layers, int64_t kv_heads, int64_t head_dim, int repeat) {
  std::printf(
      "\nA placeholder blend through DeviceRealigner (SetTokenWeights + Realign, returns when "
      "done)\n%-8s %-8s %14s %14s %14s\n",
      "tokens", "anchors", "call us", "kernel us", "overhead us");
  for (int64_t tokens : {64, 256, 1024}) {
    for (int64_t anchors : {2, 5}) {
      std::vector<DeviceBuffer> keep;
      const size_t segment_bytes = layers * 2 * kv_heads * tokens * head_dim * 2;
      auto* base = Alloc(keep, segment_bytes);
      auto* out = Alloc(keep, segment_bytes);
      std::vector<DeviceSegmentRef> deltas;
      for (int64_t a = 0; a < anchors; ++a) deltas.push_back({Alloc(keep, segment_bytes), tokens});
      std::vector<int32_t> from(tokens), to(tokens);
      for (int64_t t = 0; t < tokens; ++t) from[t] = static_cast<int32_t>(t), to[t] = 700 + t;
      std::vector<float> inv_freq(head_dim / 2, 0.01f), weights(anchors * tokens, 0.5f);
      const RealignShape shape{layers, kv_heads, tokens, head_dim, anchors};
      DeviceRealigner realigner;
      auto blend = [&] {
        kvcomm::Status done = realigner.SetTokenWeights(weights, weights);
        if (done.ok()) done = realigner.Realign(shape, base, from, to, inv_freq, deltas, out);
        if (!done.ok()) {
          std::fprintf(stderr, "realign_bench: %s\n", done.ToString().c_str());
          std::exit(1);
        }
      };
      const double call_us = HostMicros(repeat, blend);
      // The kernel alone reads zeroed positions, inv_freq and weights (the arithmetic per element
      // does not depend on the values); the call above sends the real ones up.
      auto* device_weights = reinterpret_cast<float*>(Alloc(keep, weights.size() * 4));
      auto* device_positions = reinterpret_cast<int32_t*>(Alloc(keep, tokens * 4));
      auto* device_freq = reinterpret_cast<float*>(Alloc(keep, inv_freq.size() * 4));
      cuda::AnchorRefs refs{};
      refs.count = static_cast<int>(anchors);
      for (int64_t a = 0; a < anchors; ++a) {
        refs.data[a] = reinterpret_cast<const cuda::bf16*>(deltas[a].data);
        refs.tokens[a] = tokens;
      }
      const double kernel_us =
          1e3 * kvcomm::bench::TimeMs(repeat, [&] {
            cuda::LaunchRealignKv(layers, kv_heads, tokens, head_dim, shape.first_blended_layer,
                                  false, reinterpret_cast<const cuda::bf16*>(base),
                                  device_positions, device_positions, device_freq, refs,
                                  device_weights, device_weights,
                                  reinterpret_cast<cuda::bf16*>(out), nullptr);
          });
      std::printf("%-8lld %-8lld %14.1f %14.1f %14.1f\n", static_cast<long long>(tokens),
                  static_cast<long long>(anchors), call_us, kernel_us, call_us - kernel_us);
    }
  }
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
  PrintBlendCalls(layers, kv_heads, head_dim, repeat);
  return 0;
}
