#include <cstring>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launchers.h"
#include "kernels/device.h"

namespace kvcomm::kernels {

bool CudaAvailable() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

std::string CudaDeviceDescription() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return fmt::format("no CUDA device ({})", cudaGetErrorString(err));
  if (count == 0) return "no CUDA device";
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess)
    return "CUDA device 0 (properties unavailable)";
  return fmt::format("{} (sm_{}{}, {} GiB)", prop.name, prop.major, prop.minor,
                     prop.totalGlobalMem >> 30);
}

template <>
void DeviceBuffer::Free::operator()(void* p) const {
  cudaFree(p);
}
template <>
void PinnedHostBuffer::Free::operator()(void* p) const {
  cudaFreeHost(p);
}

template <MemoryKind kKind>
Result<Allocation<kKind>> Allocation<kKind>::Allocate(size_t bytes) {
  void* p = nullptr;
  cudaError_t err =
      kKind == MemoryKind::kDevice ? cudaMalloc(&p, bytes) : cudaMallocHost(&p, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error state of the failed allocation
    return Error(ErrorCode::kResourceExhausted, "{} of {} bytes failed: {}",
                 kKind == MemoryKind::kDevice ? "cudaMalloc" : "cudaMallocHost", bytes,
                 cudaGetErrorString(err));
  }
  Allocation buffer;
  buffer.ptr_.reset(p);
  buffer.size_ = bytes;
  return buffer;
}
template class Allocation<MemoryKind::kDevice>;
template class Allocation<MemoryKind::kPinnedHost>;

Status CopyHostToDevice(void* device_dst, const void* host_src, size_t bytes) {
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaMemcpy(device_dst, host_src, bytes, cudaMemcpyHostToDevice));
  return Status::Ok();
}

Status CopyDeviceToHost(void* host_dst, const void* device_src, size_t bytes) {
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaMemcpy(host_dst, device_src, bytes, cudaMemcpyDeviceToHost));
  return Status::Ok();
}

Status CopyDeviceToDevice(void* device_dst, const void* device_src, size_t bytes) {
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaMemcpy(device_dst, device_src, bytes, cudaMemcpyDeviceToDevice));
  // cudaMemcpy does not wait for device-to-device copies, and the bytes are often read next by
  // another process (a lease through CUDA IPC) or reused at once (a released lease).
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(nullptr));
  return Status::Ok();
}

Result<std::string> CudaDeviceUuid() {
  int device = 0;
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  std::string hex;
  for (char byte : prop.uuid.bytes) hex += fmt::format("{:02x}", static_cast<uint8_t>(byte));
  return hex;
}

Result<std::string> ExportIpcHandle(const DeviceBuffer& buffer) {
  static_assert(sizeof(cudaIpcMemHandle_t) == kIpcHandleBytes);
  if (buffer.data() == nullptr) return InvalidArgument("no device allocation to export");
  cudaIpcMemHandle_t handle;
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaIpcGetMemHandle(&handle, buffer.data()));
  return std::string(reinterpret_cast<const char*>(&handle), sizeof(handle));
}

void IpcMapping::Close::operator()(void* p) const { cudaIpcCloseMemHandle(p); }

Result<IpcMapping> IpcMapping::Open(std::string_view handle) {
  if (handle.size() != kIpcHandleBytes)
    return InvalidArgument("a CUDA IPC handle has {} bytes, got {}", kIpcHandleBytes,
                           handle.size());
  cudaIpcMemHandle_t h;
  std::memcpy(&h, handle.data(), sizeof(h));
  void* p = nullptr;
  const cudaError_t err = cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return Error(ErrorCode::kUnavailable, "cannot map the CUDA IPC handle: {} ({})",
                 cudaGetErrorName(err), cudaGetErrorString(err));
  }
  IpcMapping mapping;
  mapping.ptr_.reset(p);
  return mapping;
}

Status CopyAll2D(std::span<const Copy2D> copies) {
  for (const Copy2D& c : copies)
    KVCOMM_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(c.dst, c.dst_pitch, c.src, c.src_pitch, c.width,
                                                  c.height, cudaMemcpyDefault, nullptr));
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(nullptr));
  return Status::Ok();
}

bool IsDeviceMemory(const void* p) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return attributes.type == cudaMemoryTypeDevice;
}

Status CopySegmentToCache(const std::byte* segment, int64_t tokens, const DeviceKvCache& cache,
                          int64_t position) {
  using cuda::bf16;
  KVCOMM_CUDA_RETURN_IF_ERROR(cuda::LaunchSegmentToCache(
      reinterpret_cast<const bf16*>(segment), cache.layers, cache.kv_heads, tokens, cache.head_dim,
      reinterpret_cast<bf16*>(cache.k), reinterpret_cast<bf16*>(cache.v), cache.capacity, position,
      nullptr));
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(nullptr));
  return Status::Ok();
}

Status CopyCacheToSegment(const DeviceKvCache& cache, int64_t position, int64_t tokens,
                          std::byte* segment) {
  using cuda::bf16;
  KVCOMM_CUDA_RETURN_IF_ERROR(cuda::LaunchCacheToSegment(
      reinterpret_cast<const bf16*>(cache.k), reinterpret_cast<const bf16*>(cache.v),
      cache.capacity, position, cache.layers, cache.kv_heads, tokens, cache.head_dim,
      reinterpret_cast<bf16*>(segment), nullptr));
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(nullptr));
  return Status::Ok();
}

}  // namespace kvcomm::kernels
