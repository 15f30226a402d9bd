#include "kernels/cuda/blas.h"

namespace kvcomm::kernels::cuda {
namespace {

Status Check(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return Error(ErrorCode::kInternal, "cuBLAS {} failed: {}", what, cublasGetStatusString(s));
}

}  // namespace

Result<std::unique_ptr<Blas>> Blas::Create(cudaStream_t stream) {
  std::unique_ptr<Blas> blas(new Blas());
  KVCOMM_RETURN_IF_ERROR(Check(cublasCreate(&blas->handle_), "create"));
  KVCOMM_RETURN_IF_ERROR(Check(cublasSetStream(blas->handle_, stream), "set stream"));
  return blas;
}

Blas::~Blas() {
  if (handle_ != nullptr) cublasDestroy(handle_);
}

// Row-major Y[rows][out] is column-major Y^T [out x rows]; Y^T = W (as col-major [in x out])^T *
// X^T.
Status Blas::Linear(const bf16* x, const bf16* w, int64_t rows, int64_t in, int64_t out, void* y,
                    bool y_fp32, float beta) {
  const float alpha = 1.0f;
  return Check(
      cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(rows),
                   static_cast<int>(in), &alpha, w, CUDA_R_16BF, static_cast<int>(in), x,
                   CUDA_R_16BF, static_cast<int>(in), &beta, y, y_fp32 ? CUDA_R_32F : CUDA_R_16BF,
                   static_cast<int>(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "linear");
}

Status Blas::BatchedABt(const bf16* a, int64_t stride_a, const bf16* b, int64_t stride_b, float* c,
                        int64_t stride_c, int64_t m, int64_t n, int64_t k, int64_t ldb,
                        int64_t batch) {
  const float alpha = 1.0f, beta = 0.0f;
  return Check(
      cublasGemmStridedBatchedEx(
          handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
          static_cast<int>(k), &alpha, b, CUDA_R_16BF, static_cast<int>(ldb), stride_b, a,
          CUDA_R_16BF, static_cast<int>(k), stride_a, &beta, c, CUDA_R_32F, static_cast<int>(n),
          stride_c, static_cast<int>(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "batched A*B^T");
}

// Row-major C[m][n] = A[m][k] B[k][n] is column-major C^T = B^T A^T with B^T [n x k] (ld n).
Status Blas::BatchedAB(const bf16* a, int64_t stride_a, const bf16* b, int64_t stride_b, bf16* c,
                       int64_t stride_c, int64_t m, int64_t n, int64_t k, int64_t batch) {
  const float alpha = 1.0f, beta = 0.0f;
  return Check(
      cublasGemmStridedBatchedEx(handle_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n),
                                 static_cast<int>(m), static_cast<int>(k), &alpha, b, CUDA_R_16BF,
                                 static_cast<int>(n), stride_b, a, CUDA_R_16BF, static_cast<int>(k),
                                 stride_a, &beta, c, CUDA_R_16BF, static_cast<int>(n), stride_c,
                                 static_cast<int>(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "batched A*B");
}

}  // namespace kvcomm::kernels::cuda
