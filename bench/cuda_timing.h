// What the GPU benchmarks share: the median time of an operation on the default stream, and
// device buffers that live as long as the benchmark (exits with the program's name on error).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "kernels/device.h"

namespace kvcomm::bench {

// Median over `repeat` runs of `op` (after one warm-up), in milliseconds, by CUDA events.
inline double TimeMs(int repeat, const std::function<void()>& op) {
  op();
  cudaDeviceSynchronize();
  std::vector<double> times;
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (int r = 0; r < repeat; ++r) {
    cudaEventRecord(start);
    op();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// `bytes` of device memory, zeroed, owned by `keep`.
inline std::byte* DeviceAlloc(const char* program, std::vector<kernels::DeviceBuffer>& keep,
                              size_t bytes) {
  auto buffer = kernels::DeviceBuffer::Allocate(bytes);
  if (!buffer.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, buffer.status().ToString().c_str());
    std::exit(1);
  }
  cudaMemset(buffer->data(), 0, bytes);
  keep.push_back(std::move(buffer).value());
  return keep.back().data();
}

}  // namespace kvcomm::bench
