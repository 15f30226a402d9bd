// Built instead of kernels/cuda when the build has no CUDA: every device entry point reports
// that no GPU backend is present.
#include "kernels/device.h"
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
void DeviceBuffer::Free::operator()(void*) const {}
Result<DeviceBuffer> DeviceBuffer::Allocate(size_t) { return NoCuda(); }
Status CopyHostToDevice(void*, const void*, size_t) { return NoCuda(); }
Status CopyDeviceToHost(void*, const void*, size_t) { return NoCuda(); }
Status CopyAll2D(std::span<const Copy2D>) { return NoCuda(); }
bool IsDeviceMemory(const void*) { return false; }
Status CopySegmentToCache(const std::byte*, int64_t, const DeviceKvCache&, int64_t) {
  return NoCuda();
}
Status CopyCacheToSegment(const DeviceKvCache&, int64_t, int64_t, std::byte*) { return NoCuda(); }
Status cuda::ConvertDType(const TensorView&, const TensorView&) { return NoCuda(); }

}  // namespace kvcomm::kernels
