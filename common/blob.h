// Blob: an immutable run of bytes with shared ownership of whatever holds them (a vector, a
// received ZeroMQ frame, an mmap'ed file). Copying a Blob copies a pointer, never the bytes, so
// a payload can travel socket -> store -> socket without a copy.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

namespace kvcomm {

class Blob {
 public:
  Blob() = default;
  // Takes ownership of `bytes`.
  static Blob FromVector(std::vector<std::byte> bytes) {
    auto owner = std::make_shared<std::vector<std::byte>>(std::move(bytes));
    return Blob(owner->data(), owner->size(), owner);
  }
  // `owner` keeps [data, data + size) alive and readable.
  Blob(const std::byte* data, size_t size, std::shared_ptr<const void> owner)
      : data_(data), size_(size), owner_(std::move(owner)) {}

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const std::byte> span() const { return {data_, size_}; }
  // A view of part of this blob that keeps the whole alive.
  Blob Slice(size_t offset, size_t length) const { return Blob(data_ + offset, length, owner_); }

 private:
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<const void> owner_;
};

}  // namespace kvcomm
