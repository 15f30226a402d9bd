// Device memory and availability. Without CUDA in the build every call reports Unavailable,
// so callers need no #ifdefs.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "common/status.h"

namespace kvcomm::kernels {

// True when the build has CUDA and at least one device answers.
bool CudaAvailable();
// "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" or why there is none.
std::string CudaDeviceDescription();

// Owns one device allocation (cudaMalloc); freed in the destructor. Move-only.
class DeviceBuffer {
 public:
  static Result<DeviceBuffer> Allocate(size_t bytes);
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&&) noexcept = default;
  DeviceBuffer& operator=(DeviceBuffer&&) noexcept = default;

  std::byte* data() const { return static_cast<std::byte*>(ptr_.get()); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> ptr_;
  size_t size_ = 0;
};

// Synchronous copies between host and device memory.
Status CopyHostToDevice(void* device_dst, const void* host_src, size_t bytes);
Status CopyDeviceToHost(void* host_dst, const void* device_src, size_t bytes);
// `height` rows of `width` bytes between any two of host and device memory (the direction is
// inferred from the pointers), rows `dst_pitch` / `src_pitch` bytes apart.
struct Copy2D {
  void* dst;
  size_t dst_pitch;
  const void* src;
  size_t src_pitch;
  size_t width, height;
};
// Queues the copies back to back and waits for them once (a segment moves as one copy per
// layer and K|V; waiting after each would cost more than moving the bytes).
Status CopyAll2D(std::span<const Copy2D> copies);

}  // namespace kvcomm::kernels
