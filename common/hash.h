// 128-bit identifiers and 64-bit payload checksums (xxHash XXH3).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kvcomm {

struct Hash128 {
  uint64_t hi = 0;
  uint64_t lo = 0;

  bool IsZero() const { return hi == 0 && lo == 0; }
  // 32 lowercase hex digits, high half first.
  std::string ToHex() const;
  static Result<Hash128> FromHex(std::string_view hex);
  auto operator<=>(const Hash128&) const = default;
};

struct Hash128Hasher {
  size_t operator()(const Hash128& h) const { return static_cast<size_t>(h.lo ^ (h.hi * 31)); }
};

// XXH3-64 of the bytes: the checksum carried with every payload frame and stored record.
uint64_t Checksum64(std::span<const std::byte> bytes);

// Incremental XXH3-128 over typed fields; each field is length- or size-delimited so that
// different field sequences cannot collide by concatenation.
class Hasher128 {
 public:
  Hasher128();
  ~Hasher128();
  Hasher128(const Hasher128&) = delete;
  Hasher128& operator=(const Hasher128&) = delete;

  Hasher128& AddU64(uint64_t value);
  Hasher128& AddDouble(double value);
  Hasher128& AddString(std::string_view text);
  Hasher128& AddHash(const Hash128& hash);
  Hasher128& AddBytes(std::span<const std::byte> bytes);
  Hash128 Finish() const;

 private:
  void* state_;  // XXH3_state_t, kept opaque so xxhash.h stays out of our headers
};

}  // namespace kvcomm
