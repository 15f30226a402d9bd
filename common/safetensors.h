// Reading and writing the safetensors format (8-byte little-endian header length, a JSON header
// naming each tensor's dtype, shape and byte range, then the data). Files are memory-mapped on
// read; every field of the header is checked before use, so a malformed or truncated file is an
// error naming the problem, never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "common/blob.h"
#include "common/dtype.h"
#include "common/status.h"

namespace kvcomm {

struct SafetensorsTensor {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  Blob data;  // exactly product(shape) * DTypeSize(dtype) bytes
};

class SafetensorsFile {
 public:
  // Maps `path` and parses its header.
  static Result<SafetensorsFile> Open(const std::string& path);
  // Parses an in-memory file image (the blob stays referenced by the tensors).
  static Result<SafetensorsFile> Parse(Blob image, const std::string& origin = "<memory>");

  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  // nullptr if absent.
  const SafetensorsTensor* Find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct SafetensorsInput {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  std::span<const std::byte> data;
};

// Writes atomically (temp file + rename). Tensors are laid out in the order given.
Status WriteSafetensors(const std::string& path, const std::vector<SafetensorsInput>& tensors,
                        const std::map<std::string, std::string>& metadata);

}  // namespace kvcomm
