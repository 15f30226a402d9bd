// Raw kernel launchers, compiled by nvcc. This header is the boundary between .cu files and the
// rest of kernels/: it includes nothing of ours (nvcc cannot compile fmt's consteval checks), so
// dtypes travel as their wire values and errors as cudaError_t. The .cc wrappers beside each
// launcher check shapes and turn errors into Status.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace kvcomm::kernels::cuda {

// dtype codes are kvcomm::DType values (0 F32, 1 F16, 2 BF16).
cudaError_t LaunchConvertDType(const void* src, uint8_t src_dtype, void* dst, uint8_t dst_dtype,
                               int64_t n, cudaStream_t stream);

}  // namespace kvcomm::kernels::cuda
