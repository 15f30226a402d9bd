#include "common/hash.h"

#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#endif

#include <bit>
#include <cstring>

namespace kvcomm {

std::string Hash128::ToHex() const { return fmt::format("{:016x}{:016x}", hi, lo); }

Result<Hash128> Hash128::FromHex(std::string_view hex) {
  if (hex.size() != 32) {
    return InvalidArgument("key '{}' has {} characters, expected 32 hex digits", hex, hex.size());
  }
  Hash128 out;
  for (size_t i = 0; i < 32; ++i) {
    char c = hex[i];
    uint64_t digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return InvalidArgument("key '{}' has a non-hex character '{}'", hex, c);
    }
    uint64_t& half = i < 16 ? out.hi : out.lo;
    half = (half << 4) | digit;
  }
  return out;
}

namespace {

// The same XXH3 values, with the widest vector unit the CPU has (chosen at run time): Debian's
// plain XXH3 entry points are built for SSE2, and checksums of 64-128 MiB segments sit on a
// put's critical path.
uint64_t Xxh3(const void* data, size_t size) {
#if defined(__x86_64__)
  return XXH3_64bits_dispatch(data, size);
#else
  return XXH3_64bits(data, size);
#endif
}
void Xxh3Update128(XXH3_state_t* state, const void* data, size_t size) {
#if defined(__x86_64__)
  XXH3_128bits_update_dispatch(state, data, size);
#else
  XXH3_128bits_update(state, data, size);
#endif
}

}  // namespace

uint64_t Checksum64(std::span<const std::byte> bytes) { return Xxh3(bytes.data(), bytes.size()); }

Hasher128::Hasher128() : state_(XXH3_createState()) {
  assert(state_ != nullptr);
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_));
}

Hasher128::~Hasher128() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

Hasher128& Hasher128::AddU64(uint64_t value) {
  uint64_t le = value;  // all supported targets are little-endian
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), &le, sizeof(le));
  return *this;
}

Hasher128& Hasher128::AddDouble(double value) { return AddU64(std::bit_cast<uint64_t>(value)); }

Hasher128& Hasher128::AddString(std::string_view text) {
  AddU64(text.size());
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), text.data(), text.size());
  return *this;
}

Hasher128& Hasher128::AddHash(const Hash128& hash) { return AddU64(hash.hi).AddU64(hash.lo); }

Hasher128& Hasher128::AddBytes(std::span<const std::byte> bytes) {
  AddU64(bytes.size());
  Xxh3Update128(static_cast<XXH3_state_t*>(state_), bytes.data(), bytes.size());
  return *this;
}

Hash128 Hasher128::Finish() const {
  XXH128_hash_t h = XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_));
  return {h.high64, h.low64};
}

}  // namespace kvcomm
