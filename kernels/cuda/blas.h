// Blas: a cuBLAS handle (RAII) and the GEMM shapes the runtime uses, row-major, bf16 inputs with
// fp32 accumulation. Built only with CUDA.
#pragma once

#include <cublas_v2.h>

#include <memory>

#include "common/status.h"
#include "kernels/cuda/launchers.h"

namespace kvcomm::kernels::cuda {

class Blas {
 public:
  static Result<std::unique_ptr<Blas>> Create(cudaStream_t stream = nullptr);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // y[rows][out] = x[rows][in] @ w[out][in]^T  (+ beta * y). y is bf16, or fp32 if y_fp32.
  Status Linear(const bf16* x, const bf16* w, int64_t rows, int64_t in, int64_t out, void* y,
                bool y_fp32, float beta = 0.0f);
  // For b < batch: c_b[m][n] (fp32) = a_b[m][k] @ b_b[n][k]^T, strides in elements (0 = shared).
  Status BatchedABt(const bf16* a, int64_t stride_a, const bf16* b, int64_t stride_b, float* c,
                    int64_t stride_c, int64_t m, int64_t n, int64_t k, int64_t ldb, int64_t batch);
  // For b < batch: c_b[m][n] (bf16) = a_b[m][k] @ b_b[k][n].
  Status BatchedAB(const bf16* a, int64_t stride_a, const bf16* b, int64_t stride_b, bf16* c,
                   int64_t stride_c, int64_t m, int64_t n, int64_t k, int64_t batch);

 private:
  Blas() = default;
  cublasHandle_t handle_ = nullptr;
};

}  // namespace kvcomm::kernels::cuda
