// Built instead of kernels/cuda when the build has no CUDA: every device entry point reports
// that no GPU backend is present.
#include "kernels/device.h"
#include "kernels/device_realign.h"
#include "kernels/ops.h"

namespace kvcomm::kernels {
namespace {
Status NoCuda() {
  return Status(ErrorCode::kUnavailable,
                "kvcomm was built without CUDA (KVCOMM_CUDA=OFF or no nvcc)");
}
}  // namespace

bool CudaAvailable() { return false; }
std::string CudaDeviceDescription() { return "no CUDA backend in this build"; }
template <>
void DeviceBuffer::Free::operator()(void*) const {}
template <>
void PinnedHostBuffer::Free::operator()(void*) const {}
template <>
Result<DeviceBuffer> DeviceBuffer::Allocate(size_t) {
  return NoCuda();
}
template <>
Result<PinnedHostBuffer> PinnedHostBuffer::Allocate(size_t) {
  return NoCuda();
}
Status CopyHostToDevice(void*, const void*, size_t) { return NoCuda(); }
Status CopyDeviceToHost(void*, const void*, size_t) { return NoCuda(); }
Status CopyDeviceToDevice(void*, const void*, size_t) { return NoCuda(); }
Status CopyAll2D(std::span<const Copy2D>) { return NoCuda(); }
Result<std::string> CudaDeviceUuid() { return NoCuda(); }
Result<std::string> ExportIpcHandle(const DeviceBuffer&) { return NoCuda(); }
void IpcMapping::Close::operator()(void*) const {}
Result<IpcMapping> IpcMapping::Open(std::string_view) { return NoCuda(); }
bool IsDeviceMemory(const void*) { return false; }
Status CopySegmentToCache(const std::byte*, int64_t, const DeviceKvCache&, int64_t) {
  return NoCuda();
}
Status CopyCacheToSegment(const DeviceKvCache&, int64_t, int64_t, std::byte*) { return NoCuda(); }
struct DeviceRealigner::Workspace {};
DeviceRealigner::DeviceRealigner() = default;
DeviceRealigner::~DeviceRealigner() = default;
Status DeviceRealigner::TokenSums(const RealignShape&, const std::byte*,
                                  std::span<const DeviceSegmentRef>, std::span<float>) {
  return NoCuda();
}
Result<double> DeviceRealigner::ValueSquaredNorm(const RealignShape&, const std::byte*) {
  return NoCuda();
}
Status DeviceRealigner::SetTokenWeights(std::span<const float>, std::span<const float>) {
  return NoCuda();
}
Status DeviceRealigner::SetChannelWeights(const RealignShape&, const std::byte*,
                                          std::span<const DeviceSegmentRef>, float) {
  return NoCuda();
}
Status DeviceRealigner::PositionFreeDifference(const RealignShape&, const std::byte*, int32_t,
                                               const std::byte*, int32_t, std::span<const float>,
                                               std::byte*) {
  return NoCuda();
}
Status DeviceRealigner::Realign(const RealignShape&, const std::byte*, std::span<const int32_t>,
                                std::span<const int32_t>, std::span<const float>,
                                std::span<const DeviceSegmentRef>, std::byte*) {
  return NoCuda();
}
Status cuda::ConvertDType(const TensorView&, const TensorView&) { return NoCuda(); }

}  // namespace kvcomm::kernels
