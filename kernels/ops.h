// The operations of kernels/, declared once over TensorViews. Each has a CPU reference
// (kernels/cpu) and, where it matters, a CUDA version (kernels/cuda); the backend is chosen by
// the views' device. Shapes and dtypes are checked here and reported as Status.
#pragma once

#include "common/status.h"
#include "kernels/tensor_view.h"

namespace kvcomm::kernels {

// dst[i] = src[i] converted between F32, F16 and BF16 (round to nearest even). Same element
// count; both views on the same device.
Status ConvertDType(const TensorView& src, const TensorView& dst);

namespace cpu {
void ConvertDType(const TensorView& src, const TensorView& dst);
}  // namespace cpu
namespace cuda {
Status ConvertDType(const TensorView& src, const TensorView& dst);
}  // namespace cuda

}  // namespace kvcomm::kernels
