// TensorView: a non-owning view of a contiguous tensor in host or device memory.
#pragma once

#include <cstdint>
#include <vector>

#include "common/dtype.h"

namespace kvcomm::kernels {

enum class Device : uint8_t { kCpu, kCuda };

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  Device device = Device::kCpu;

  int64_t NumElements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  size_t NumBytes() const { return static_cast<size_t>(NumElements()) * DTypeSize(dtype); }
};

}  // namespace kvcomm::kernels
