// Device memory and availability. Without CUDA in the build every call reports Unavailable,
// so callers need no #ifdefs.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/blob.h"
#include "common/status.h"

namespace kvcomm::kernels {

// True when the build has CUDA and at least one device answers.
bool CudaAvailable();
// "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" or why there is none.
std::string CudaDeviceDescription();

// Owns one allocation, freed in the destructor. Move-only. kDevice: device memory (cudaMalloc);
// kPinnedHost: page-locked host memory (cudaMallocHost), which copies to and from the device
// at full bus speed.
enum class MemoryKind { kDevice, kPinnedHost };
template <MemoryKind kKind>
class Allocation {
 public:
  static Result<Allocation> Allocate(size_t bytes);
  Allocation() = default;
  Allocation(Allocation&&) noexcept = default;
  Allocation& operator=(Allocation&&) noexcept = default;

  std::byte* data() const { return static_cast<std::byte*>(ptr_.get()); }
  size_t size() const { return size_; }
  // Grows to at least `bytes`, never shrinks (the old block is freed first, so the two need not
  // fit together): workspace reused from call to call without an allocation per call.
  Result<std::byte*> Reserve(size_t bytes) {
    if (size_ < bytes) {
      *this = Allocation();
      auto grown = Allocate(bytes);
      if (!grown.ok()) return grown.status();
      *this = std::move(grown).value();
    }
    return data();
  }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> ptr_;
  size_t size_ = 0;
};
using DeviceBuffer = Allocation<MemoryKind::kDevice>;
using PinnedHostBuffer = Allocation<MemoryKind::kPinnedHost>;

// The current device's UUID as 32 hex digits: two processes share a GPU when theirs match.
Result<std::string> CudaDeviceUuid();

// CUDA IPC: a process maps a device allocation another process on the same GPU exported.
constexpr size_t kIpcHandleBytes = 64;  // sizeof(cudaIpcMemHandle_t)
// The handle of the whole of `buffer` (its bytes, to send to another process).
Result<std::string> ExportIpcHandle(const DeviceBuffer& buffer);
// This process's mapping of an allocation another process exported; unmapped on destruction.
// Opening a handle exported by this very process fails (CUDA does not map its own memory).
class IpcMapping {
 public:
  static Result<IpcMapping> Open(std::string_view handle);
  IpcMapping() = default;
  IpcMapping(IpcMapping&&) noexcept = default;
  IpcMapping& operator=(IpcMapping&&) noexcept = default;
  std::byte* data() const { return static_cast<std::byte*>(ptr_.get()); }

 private:
  struct Close {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Close> ptr_;
};

// Synchronous copies between host and device memory, and within device memory.
Status CopyHostToDevice(void* device_dst, const void* host_src, size_t bytes);
Status CopyDeviceToHost(void* host_dst, const void* device_src, size_t bytes);
Status CopyDeviceToDevice(void* device_dst, const void* device_src, size_t bytes);
// `bytes` of device memory in fresh host memory (not zero-filled first: the copy writes it all).
inline Result<Blob> CopyDeviceToBlob(const void* device_src, size_t bytes) {
  std::shared_ptr<std::byte[]> host = std::make_shared_for_overwrite<std::byte[]>(bytes);
  KVCOMM_RETURN_IF_ERROR(CopyDeviceToHost(host.get(), device_src, bytes));
  return Blob(host.get(), bytes, host);
}
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

// True for a pointer into device memory (cudaMalloc), false for host memory or without CUDA.
bool IsDeviceMemory(const void* p);

// A KV cache in device memory: bf16 K and V, each [layers][kv_heads][capacity][head_dim].
struct DeviceKvCache {
  std::byte* k;
  std::byte* v;
  int64_t layers, kv_heads, capacity, head_dim;
};
// A bf16 segment [layer][K|V][kv_heads][tokens][head_dim] in device memory into the cache at
// positions [position, position + tokens), and out of it; one kernel, returns when done.
Status CopySegmentToCache(const std::byte* segment, int64_t tokens, const DeviceKvCache& cache,
                          int64_t position);
Status CopyCacheToSegment(const DeviceKvCache& cache, int64_t position, int64_t tokens,
                          std::byte* segment);

}  // namespace kvcomm::kernels
