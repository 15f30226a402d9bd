#include "tests/kvstore/test_segments.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>

namespace kvcomm::testing {

kvstore::Segment MakeSegment(uint32_t tokens, uint64_t seed, const std::string& name_space,
                             DType dtype) {
  kvstore::Segment segment;
  auto& meta = segment.meta;
  meta.layout = {2, 2, tokens, 8, dtype};
  meta.name_space = name_space;
  meta.fingerprint = FingerprintFromShape(2, 2, 8, dtype);
  std::mt19937_64 rng(seed);
  for (uint32_t i = 0; i < tokens; ++i)
    meta.token_ids.push_back(static_cast<int32_t>(rng() % 32000));
  std::vector<std::byte> payload(meta.layout.PayloadBytes());
  for (auto& b : payload) b = static_cast<std::byte>(rng());
  meta.payload_bytes = payload.size();
  meta.checksum = Checksum64(payload);
  meta.context_key = ComputeContextKey(meta.fingerprint, name_space, {}, meta.token_ids);
  meta.content_key = ComputeContentKey(meta.fingerprint, name_space, meta.token_ids);
  segment.payload = Blob::FromVector(std::move(payload));
  return segment;
}

std::string TempDir(const std::string& label) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base ? base : "/tmp") + "/kvcomm-" + label + "-XXXXXX";
  char* made = ::mkdtemp(pattern.data());
  return made ? std::string(made) : std::string();
}

}  // namespace kvcomm::testing
