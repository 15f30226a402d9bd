#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

namespace kvcomm {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the format's own limit

Status FileError(const std::string& path, const char* what) {
  return Error(ErrorCode::kInvalidArgument, "{}: {}: {}", path, what, std::strerror(errno));
}

}  // namespace

Result<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return FileError(path, "cannot open");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    Status s = FileError(path, "cannot stat");
    ::close(fd);
    return s;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgument("{}: not a regular file", path);
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return InvalidArgument("{}: empty file, not safetensors", path);
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return FileError(path, "cannot mmap");
  std::shared_ptr<const void> owner(
      map, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
  return Parse(Blob(static_cast<const std::byte*>(map), size, std::move(owner)), path);
}

Result<SafetensorsFile> SafetensorsFile::Parse(Blob image, const std::string& origin) {
  if (image.size() < 8) {
    return InvalidArgument("{}: {} bytes is too short for a safetensors header", origin,
                           image.size());
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, image.data(), 8);
  if (header_len > kMaxHeaderBytes || header_len > image.size() - 8) {
    return InvalidArgument(
        "{}: header length {} exceeds the file ({} bytes): truncated or not safetensors", origin,
        header_len, image.size());
  }
  const char* header_begin = reinterpret_cast<const char*>(image.data() + 8);
  nlohmann::json header = nlohmann::json::parse(header_begin, header_begin + header_len, nullptr,
                                                /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return InvalidArgument("{}: header is not a JSON object", origin);
  }
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = image.size() - data_start;

  SafetensorsFile file;
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return InvalidArgument("{}: __metadata__ is not an object", origin);
      for (auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return InvalidArgument("{}: metadata '{}' is not a string", origin, key);
        }
        file.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets") || !entry["dtype"].is_string() ||
        !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2) {
      return InvalidArgument("{}: tensor '{}' needs dtype, shape and two data_offsets", origin,
                             name);
    }
    auto dtype = ParseDType(entry["dtype"].get<std::string>());
    if (!dtype.ok())
      return dtype.status().WithContext(fmt::format("{}: tensor '{}'", origin, name));
    SafetensorsTensor tensor{name, *dtype, {}, {}};
    uint64_t elements = 1;
    for (const auto& dim : entry["shape"]) {
      if (!dim.is_number_unsigned()) {
        return InvalidArgument("{}: tensor '{}' has a non-integer dimension", origin, name);
      }
      uint64_t d = dim.get<uint64_t>();
      if (d != 0 && elements > (uint64_t{1} << 48) / d) {
        return InvalidArgument("{}: tensor '{}' shape is absurdly large", origin, name);
      }
      elements *= d;
      tensor.shape.push_back(d);
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      return InvalidArgument("{}: tensor '{}' has non-integer data_offsets", origin, name);
    }
    uint64_t begin = offsets[0].get<uint64_t>();
    uint64_t end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return InvalidArgument(
          "{}: tensor '{}' bytes [{}, {}) lie outside the {} data bytes (truncated file?)", origin,
          name, begin, end, data_size);
    }
    uint64_t expected = elements * DTypeSize(*dtype);
    if (end - begin != expected) {
      return InvalidArgument("{}: tensor '{}' has {} bytes but shape and dtype need {}", origin,
                             name, end - begin, expected);
    }
    tensor.data = image.Slice(data_start + begin, end - begin);
    file.tensors_.push_back(std::move(tensor));
  }
  return file;
}

const SafetensorsTensor* SafetensorsFile::Find(const std::string& name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Status WriteSafetensors(const std::string& path, const std::vector<SafetensorsInput>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    uint64_t elements = 1;
    for (uint64_t d : t.shape) elements *= d;
    if (elements * DTypeSize(t.dtype) != t.data.size()) {
      return InvalidArgument("tensor '{}' has {} bytes, shape and dtype need {}", t.name,
                             t.data.size(), elements * DTypeSize(t.dtype));
    }
    header[t.name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data section to 8 bytes
  uint64_t header_len = text.size();

  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return FileError(tmp, "cannot create");
    out.write(reinterpret_cast<const char*>(&header_len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : tensors) {
      out.write(reinterpret_cast<const char*>(t.data.data()),
                static_cast<std::streamsize>(t.data.size()));
    }
    if (!out.flush()) return FileError(tmp, "cannot write");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return FileError(path, "cannot rename into place");
  return Status::Ok();
}

}  // namespace kvcomm
