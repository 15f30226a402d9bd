#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/cuda/launchers.h"

namespace kvcomm::kernels::cuda {
namespace {

constexpr uint8_t kF16 = 1;
constexpr uint8_t kBF16 = 2;

__device__ float LoadAsFloat(const void* base, uint8_t dtype, int64_t i) {
  switch (dtype) {
    case kF16:
      return __half2float(static_cast<const __half*>(base)[i]);
    case kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    default:
      return static_cast<const float*>(base)[i];
  }
}

__device__ void StoreFloat(void* base, uint8_t dtype, int64_t i, float v) {
  switch (dtype) {
    case kF16:
      static_cast<__half*>(base)[i] = __float2half_rn(v);
      break;
    case kBF16:
      static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v);
      break;
    default:
      static_cast<float*>(base)[i] = v;
      break;
  }
}

__global__ void ConvertKernel(const void* src, uint8_t src_dtype, void* dst, uint8_t dst_dtype,
                              int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    StoreFloat(dst, dst_dtype, i, LoadAsFloat(src, src_dtype, i));
  }
}

}  // namespace

cudaError_t LaunchConvertDType(const void* src, uint8_t src_dtype, void* dst, uint8_t dst_dtype,
                               int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65535));
  ConvertKernel<<<blocks, threads, 0, stream>>>(src, src_dtype, dst, dst_dtype, n);
  return cudaGetLastError();
}

}  // namespace kvcomm::kernels::cuda
