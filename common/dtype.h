// Element types of KV payloads and tensors on the wire and in files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/status.h"

namespace kvcomm {

// Values are the wire values of schemas/kvcomm.capnp's DType.
enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kI32 = 3 };

size_t DTypeSize(DType dtype);
// Safetensors spelling: "F32", "F16", "BF16", "I32".
std::string_view DTypeName(DType dtype);
Result<DType> ParseDType(std::string_view name);
bool IsValidDType(uint32_t wire_value);

// IEEE binary16 and bfloat16 conversions (round to nearest even; NaN stays NaN).
uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t bits);
uint16_t FloatToBFloat16(float value);
float BFloat16ToFloat(uint16_t bits);

}  // namespace kvcomm
