// Little-endian byte writing and bounds-checked reading for the codecs, and their common
// header: 4-byte magic, u32 version, layers, kv_heads, tokens, head_dim, dtype.
#pragma once

#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "common/dtype.h"
#include "common/kv_layout.h"

namespace kvcomm::kvstore::compress::internal {

constexpr uint32_t kVersion = 1;

class Writer {
 public:
  explicit Writer(size_t bytes) { out_.reserve(bytes); }
  void Bytes(const void* p, size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  void U32(uint32_t v) { Bytes(&v, 4); }  // little-endian hosts only (x86-64, aarch64)
  void Rows(const float* x, size_t n, DType dtype) {
    for (size_t i = 0; i < n; ++i) {
      if (dtype == DType::kF32) {
        Bytes(&x[i], 4);
      } else {
        const uint16_t h = dtype == DType::kBF16 ? FloatToBFloat16(x[i]) : FloatToHalf(x[i]);
        Bytes(&h, 2);
      }
    }
  }
  std::vector<std::byte> Take() { return std::move(out_); }

 private:
  std::vector<std::byte> out_;
};

class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  bool Bytes(void* p, size_t n) {
    if (in_.size() - at_ < n) return false;
    std::memcpy(p, in_.data() + at_, n);
    at_ += n;
    return true;
  }
  bool U32(uint32_t& v) { return Bytes(&v, 4); }
  bool Rows(float* x, size_t n, DType dtype) {
    if (in_.size() - at_ < n * DTypeSize(dtype)) return false;
    for (size_t i = 0; i < n; ++i) {
      if (dtype == DType::kF32) {
        Bytes(&x[i], 4);
      } else {
        uint16_t h = 0;
        Bytes(&h, 2);
        x[i] = dtype == DType::kBF16 ? BFloat16ToFloat(h) : HalfToFloat(h);
      }
    }
    return true;
  }
  bool done() const { return at_ == in_.size(); }

 private:
  std::span<const std::byte> in_;
  size_t at_ = 0;
};

inline Result<KvLayout> ReadLayout(Reader& r, const char* magic, std::string_view codec) {
  char got[4];
  uint32_t version = 0, dtype = 0;
  KvLayout layout;
  if (!r.Bytes(got, 4) || std::memcmp(got, magic, 4) != 0)
    return Error(ErrorCode::kDataLoss, "not a {} segment (bad magic)", codec);
  if (!r.U32(version) || version != kVersion)
    return Error(ErrorCode::kDataLoss, "{} segment version {} is not {}", codec, version, kVersion);
  if (!r.U32(layout.num_layers) || !r.U32(layout.kv_heads) || !r.U32(layout.tokens) ||
      !r.U32(layout.head_dim) || !r.U32(dtype) || !IsValidDType(dtype))
    return Error(ErrorCode::kDataLoss, "{} segment header is truncated or damaged", codec);
  layout.dtype = static_cast<DType>(dtype);
  if (Status valid = layout.Validate(); !valid.ok())
    return Error(ErrorCode::kDataLoss, "{} segment header: {}", codec, valid.message());
  return layout;
}

inline void WriteLayout(Writer& w, const char* magic, const KvLayout& l) {
  w.Bytes(magic, 4);
  for (uint32_t v :
       {kVersion, l.num_layers, l.kv_heads, l.tokens, l.head_dim, static_cast<uint32_t>(l.dtype)})
    w.U32(v);
}

}  // namespace kvcomm::kvstore::compress::internal
