#include "kernels/ops.h"

namespace kvcomm::kernels {

Status ConvertDType(const TensorView& src, const TensorView& dst) {
  auto is_float = [](DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; };
  if (!is_float(src.dtype) || !is_float(dst.dtype)) {
    return InvalidArgument("ConvertDType supports F32/F16/BF16, got {} -> {}", DTypeName(src.dtype),
                           DTypeName(dst.dtype));
  }
  if (src.NumElements() != dst.NumElements()) {
    return InvalidArgument("ConvertDType: {} source elements but {} destination elements",
                           src.NumElements(), dst.NumElements());
  }
  if (src.device != dst.device) {
    return InvalidArgument("ConvertDType: source and destination are on different devices");
  }
  if (src.device == Device::kCuda) return cuda::ConvertDType(src, dst);
  cpu::ConvertDType(src, dst);
  return Status::Ok();
}

}  // namespace kvcomm::kernels
