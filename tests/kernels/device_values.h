// Device copies of host test values (bf16 or fp32) and back, for the CUDA kernel tests.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "common/dtype.h"
#include "kernels/device.h"

namespace kvcomm::kernels {

// Device copies of host values, as bf16 or fp32.
struct Dev {
  DeviceBuffer buffer;
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(buffer.data());
  }
};
inline Dev ToDeviceBf16(const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) bits[i] = FloatToBFloat16(v[i]);
  Dev d{std::move(DeviceBuffer::Allocate(bits.size() * 2)).value()};
  EXPECT_TRUE(CopyHostToDevice(d.buffer.data(), bits.data(), bits.size() * 2).ok());
  return d;
}
template <typename T>
Dev ToDevice(const std::vector<T>& v) {
  Dev d{std::move(DeviceBuffer::Allocate(v.size() * sizeof(T))).value()};
  EXPECT_TRUE(CopyHostToDevice(d.buffer.data(), v.data(), v.size() * sizeof(T)).ok());
  return d;
}
inline std::vector<float> FromDeviceBf16(const Dev& d, size_t n) {
  std::vector<uint16_t> bits(n);
  EXPECT_TRUE(CopyDeviceToHost(bits.data(), d.buffer.data(), n * 2).ok());
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = BFloat16ToFloat(bits[i]);
  return out;
}
inline std::vector<float> FromDeviceF32(const Dev& d, size_t n) {
  std::vector<float> out(n);
  EXPECT_TRUE(CopyDeviceToHost(out.data(), d.buffer.data(), n * 4).ok());
  return out;
}
}  // namespace kvcomm::kernels
