#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launchers.h"
#include "kernels/ops.h"

namespace kvcomm::kernels::cuda {

Status ConvertDType(const TensorView& src, const TensorView& dst) {
  KVCOMM_CUDA_RETURN_IF_ERROR(LaunchConvertDType(src.data, static_cast<uint8_t>(src.dtype),
                                                 dst.data, static_cast<uint8_t>(dst.dtype),
                                                 src.NumElements(), nullptr));
  KVCOMM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(nullptr));
  return Status::Ok();
}

}  // namespace kvcomm::kernels::cuda
