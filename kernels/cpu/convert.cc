#include <cstring>

#include "kernels/ops.h"

namespace kvcomm::kernels::cpu {
namespace {

float Load(const void* base, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(base)[i];
    case DType::kF16:
      return HalfToFloat(static_cast<const uint16_t*>(base)[i]);
    case DType::kBF16:
      return BFloat16ToFloat(static_cast<const uint16_t*>(base)[i]);
    case DType::kI32:
      break;
  }
  assert(false);
  return 0;
}

void Store(void* base, DType dtype, int64_t i, float value) {
  switch (dtype) {
    case DType::kF32:
      static_cast<float*>(base)[i] = value;
      return;
    case DType::kF16:
      static_cast<uint16_t*>(base)[i] = FloatToHalf(value);
      return;
    case DType::kBF16:
      static_cast<uint16_t*>(base)[i] = FloatToBFloat16(value);
      return;
    case DType::kI32:
      break;
  }
  assert(false);
}

}  // namespace

void ConvertDType(const TensorView& src, const TensorView& dst) {
  const int64_t n = src.NumElements();
  if (src.dtype == dst.dtype) {
    std::memmove(dst.data, src.data, src.NumBytes());
    return;
  }
  for (int64_t i = 0; i < n; ++i) Store(dst.data, dst.dtype, i, Load(src.data, src.dtype, i));
}

}  // namespace kvcomm::kernels::cpu
