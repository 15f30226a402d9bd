// Low-rank approximation (GEAR's residual) and SLERP merging (MiniCache's layer merge).
#include <algorithm>
#include <cassert>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/compress.h"

namespace kvcomm::kernels::cpu {
namespace {

// Modified Gram-Schmidt on the columns of q [rows][rank] (rank-deficient columns become 0).
void Orthonormalise(std::vector<double>& q, int64_t rows, int64_t rank) {
  for (int64_t j = 0; j < rank; ++j) {
    for (int64_t i = 0; i < j; ++i) {
      double dot = 0;
      for (int64_t r = 0; r < rows; ++r) dot += q[r * rank + i] * q[r * rank + j];
      for (int64_t r = 0; r < rows; ++r) q[r * rank + j] -= dot * q[r * rank + i];
    }
    double norm = 0;
    for (int64_t r = 0; r < rows; ++r) norm += q[r * rank + j] * q[r * rank + j];
    norm = std::sqrt(norm);
    for (int64_t r = 0; r < rows; ++r) q[r * rank + j] = norm > 1e-12 ? q[r * rank + j] / norm : 0;
  }
}

}  // namespace

void LowRank(const float* x, int64_t rows, int64_t cols, int64_t rank, int iterations, float* u,
             float* v) {
  assert(rank >= 1 && rank <= std::min(rows, cols));
  std::mt19937 rng(20240303);
  std::normal_distribution<double> normal(0, 1);
  std::vector<double> omega(cols * rank), q(rows * rank, 0.0), z(cols * rank);
  for (auto& w : omega) w = normal(rng);
  auto times_x = [&](const std::vector<double>& in, std::vector<double>& out) {  // x in
    std::fill(out.begin(), out.end(), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        for (int64_t j = 0; j < rank; ++j)
          out[r * rank + j] += double{x[r * cols + c]} * in[c * rank + j];
  };
  auto times_xt = [&](const std::vector<double>& in, std::vector<double>& out) {  // x^T in
    std::fill(out.begin(), out.end(), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        for (int64_t j = 0; j < rank; ++j)
          out[c * rank + j] += double{x[r * cols + c]} * in[r * rank + j];
  };
  times_x(omega, q);
  Orthonormalise(q, rows, rank);
  for (int it = 0; it < iterations; ++it) {
    times_xt(q, z);
    Orthonormalise(z, cols, rank);
    times_x(z, q);
    Orthonormalise(q, rows, rank);
  }
  times_xt(q, z);
  for (int64_t i = 0; i < rows * rank; ++i) u[i] = static_cast<float>(q[i]);
  for (int64_t i = 0; i < cols * rank; ++i) v[i] = static_cast<float>(z[i]);
}

void LowRankReconstruct(const float* a, const float* b, int64_t rows, int64_t cols, int64_t rank,
                        float* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      double sum = 0;
      for (int64_t j = 0; j < rank; ++j) sum += double{a[r * rank + j]} * b[c * rank + j];
      out[r * cols + c] += static_cast<float>(sum);
    }
}

void LowRankProject(const float* x, const float* b, int64_t rows, int64_t cols, int64_t rank,
                    float* y) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < rank; ++j) {
      double sum = 0;
      for (int64_t c = 0; c < cols; ++c) sum += double{x[r * cols + c]} * b[c * rank + j];
      y[r * rank + j] = static_cast<float>(sum);
    }
}

void SlerpMerge(const float* a, const float* b, int64_t rows, int64_t dim, float t,
                float* direction, float* norm_a, float* norm_b, float* angle) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = a + r * dim;
    const float* y = b + r * dim;
    double nx = 0, ny = 0, dot = 0;
    for (int64_t d = 0; d < dim; ++d) {
      nx += double{x[d]} * x[d];
      ny += double{y[d]} * y[d];
      dot += double{x[d]} * y[d];
    }
    nx = std::sqrt(nx);
    ny = std::sqrt(ny);
    norm_a[r] = static_cast<float>(nx);
    norm_b[r] = static_cast<float>(ny);
    float* out = direction + r * dim;
    if (nx == 0 || ny == 0) {  // one side carries no direction
      const float* only = nx == 0 ? y : x;
      const double n = nx == 0 ? ny : nx;
      for (int64_t d = 0; d < dim; ++d) out[d] = n > 0 ? static_cast<float>(only[d] / n) : 0.f;
      angle[r] = 0;
      continue;
    }
    const double cosine = std::clamp(dot / (nx * ny), -1.0, 1.0), theta = std::acos(cosine);
    angle[r] = static_cast<float>(theta);
    const double s = std::sin(theta);
    // Nearly parallel: linear interpolation of the unit vectors is the limit of SLERP.
    const double wa = s < 1e-6 ? 1 - t : std::sin((1 - t) * theta) / s;
    const double wb = s < 1e-6 ? t : std::sin(t * theta) / s;
    double norm = 0;
    std::vector<double> m(dim);
    for (int64_t d = 0; d < dim; ++d) {
      m[d] = wa * x[d] / nx + wb * y[d] / ny;
      norm += m[d] * m[d];
    }
    norm = std::sqrt(norm);
    for (int64_t d = 0; d < dim; ++d) out[d] = static_cast<float>(norm > 0 ? m[d] / norm : 0.0);
  }
}

}  // namespace kvcomm::kernels::cpu
