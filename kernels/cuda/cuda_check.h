// One macro that turns a CUDA runtime error into a Status.
#pragma once

#include <cuda_runtime.h>

#include "common/status.h"

#define KVCOMM_CUDA_RETURN_IF_ERROR(expr)                                                      \
  do {                                                                                         \
    cudaError_t kvcomm_cuda_err_ = (expr);                                                     \
    if (kvcomm_cuda_err_ != cudaSuccess) {                                                     \
      return ::kvcomm::Error(::kvcomm::ErrorCode::kInternal, "CUDA {} failed: {} ({})", #expr, \
                             cudaGetErrorName(kvcomm_cuda_err_),                               \
                             cudaGetErrorString(kvcomm_cuda_err_));                            \
    }                                                                                          \
  } while (0)
