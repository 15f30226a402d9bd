#include "schemas/wire.h"

#include <capnp/serialize.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>

#include "common/dtype.h"
#include "common/status.h"

namespace kvcomm::wire {

static_assert(static_cast<int>(proto::ErrorCode::MALFORMED_MESSAGE) ==
                      static_cast<int>(ErrorCode::kMalformedMessage) &&
                  static_cast<int>(proto::ErrorCode::DATA_LOSS) ==
                      static_cast<int>(ErrorCode::kDataLoss) &&
                  static_cast<int>(proto::ErrorCode::INVALID_ARGUMENT) ==
                      static_cast<int>(ErrorCode::kInvalidArgument),
              "proto::ErrorCode and kvcomm::ErrorCode must agree");
static_assert(kNumErrorCodes == static_cast<int>(proto::ErrorCode::MALFORMED_MESSAGE) + 1);
static_assert(static_cast<int>(proto::DType::BF16) == static_cast<int>(DType::kBF16) &&
              static_cast<int>(proto::DType::I32) == static_cast<int>(DType::kI32));

Hash128 ReadKey(proto::Key128::Reader key) { return {key.getHi(), key.getLo()}; }

void WriteKey(proto::Key128::Builder out, const Hash128& key) {
  out.setHi(key.hi);
  out.setLo(key.lo);
}

Result<KvLayout> ReadShape(proto::KvShape::Reader shape) {
  uint16_t dtype = static_cast<uint16_t>(shape.getDtype());
  if (!IsValidDType(dtype)) return InvalidArgument("shape has unknown dtype value {}", dtype);
  KvLayout layout{shape.getNumLayers(), shape.getKvHeads(), shape.getTokens(), shape.getHeadDim(),
                  static_cast<DType>(dtype)};
  KVCOMM_RETURN_IF_ERROR(layout.Validate());
  return layout;
}

void WriteShape(proto::KvShape::Builder out, const KvLayout& layout) {
  out.setNumLayers(layout.num_layers);
  out.setKvHeads(layout.kv_heads);
  out.setTokens(layout.tokens);
  out.setHeadDim(layout.head_dim);
  out.setDtype(static_cast<proto::DType>(layout.dtype));
}

void DescribeKvTensor(proto::TensorDesc::Builder out, const KvLayout& layout, uint64_t checksum) {
  out.setName("kv");
  out.setDtype(static_cast<proto::DType>(layout.dtype));
  auto shape = out.initShape(5);
  shape.set(0, layout.num_layers);
  shape.set(1, 2);
  shape.set(2, layout.kv_heads);
  shape.set(3, layout.tokens);
  shape.set(4, layout.head_dim);
  out.setByteLength(layout.PayloadBytes());
  out.setChecksum(checksum);
}

Status CheckKvTensor(proto::TensorDesc::Reader desc, const KvLayout& layout,
                     std::span<const std::byte> frame) {
  KVCOMM_RETURN_IF_ERROR(CheckKvTensorShape(desc, layout, frame.size()));
  if (Checksum64(frame) != desc.getChecksum()) {
    return Error(ErrorCode::kDataLoss,
                 "payload checksum mismatch: the bytes were damaged in transit");
  }
  return Status::Ok();
}

Status CheckKvTensorShape(proto::TensorDesc::Reader desc, const KvLayout& layout, uint64_t bytes) {
  if (desc.getName() != "kv") {
    return InvalidArgument("payload tensor is named '{}', expected 'kv'", desc.getName().cStr());
  }
  if (static_cast<uint16_t>(desc.getDtype()) != static_cast<uint16_t>(layout.dtype)) {
    return InvalidArgument("payload tensor dtype {} differs from the segment dtype {}",
                           static_cast<int>(desc.getDtype()), DTypeName(layout.dtype));
  }
  auto shape = desc.getShape();
  const uint64_t expected[] = {layout.num_layers, 2, layout.kv_heads, layout.tokens,
                               layout.head_dim};
  bool shape_ok = shape.size() == 5;
  for (unsigned i = 0; shape_ok && i < 5; ++i) shape_ok = shape[i] == expected[i];
  if (!shape_ok) {
    return InvalidArgument("payload tensor shape does not match the segment layout {}",
                           layout.ToString());
  }
  if (desc.getByteLength() != layout.PayloadBytes() || bytes != layout.PayloadBytes()) {
    return InvalidArgument("payload is {} bytes (described as {}), but layout {} needs {}", bytes,
                           desc.getByteLength(), layout.ToString(), layout.PayloadBytes());
  }
  return Status::Ok();
}

void DescribeTensor(proto::TensorDesc::Builder out, std::string_view name, DType dtype,
                    std::span<const uint64_t> shape, std::span<const std::byte> frame) {
  out.setName(std::string(name));
  out.setDtype(static_cast<proto::DType>(dtype));
  auto dims = out.initShape(static_cast<unsigned>(shape.size()));
  for (unsigned i = 0; i < shape.size(); ++i) dims.set(i, shape[i]);
  out.setByteLength(frame.size());
  out.setChecksum(Checksum64(frame));
}

void DescribeBytes(proto::TensorDesc::Builder out, std::string_view name,
                   std::span<const std::byte> frame) {
  const uint64_t shape[] = {frame.size()};
  DescribeTensor(out, name, DType::kF32, shape, frame);
}

namespace {

Status CheckLengthAndChecksum(proto::TensorDesc::Reader desc, std::string_view name,
                              uint64_t expected, std::span<const std::byte> frame) {
  if (desc.getByteLength() != expected || frame.size() != expected)
    return InvalidArgument("tensor '{}' is {} bytes (described as {}), expected {}", name,
                           frame.size(), desc.getByteLength(), expected);
  if (Checksum64(frame) != desc.getChecksum())
    return Error(ErrorCode::kDataLoss, "tensor '{}' checksum mismatch: damaged in transit", name);
  return Status::Ok();
}

}  // namespace

Status CheckTensor(proto::TensorDesc::Reader desc, std::string_view name, DType dtype,
                   std::span<const uint64_t> shape, std::span<const std::byte> frame) {
  if (std::string_view(desc.getName().cStr(), desc.getName().size()) != name)
    return InvalidArgument("tensor is named '{}', expected '{}'", desc.getName().cStr(), name);
  if (static_cast<uint16_t>(desc.getDtype()) != static_cast<uint16_t>(dtype))
    return InvalidArgument("tensor '{}' has dtype {}, expected {}", name,
                           static_cast<int>(desc.getDtype()), DTypeName(dtype));
  std::vector<uint64_t> dims;
  for (uint64_t d : desc.getShape()) dims.push_back(d);
  uint64_t elements = 1;
  for (uint64_t d : shape) elements *= d;
  if (!std::equal(dims.begin(), dims.end(), shape.begin(), shape.end()))
    return InvalidArgument("tensor '{}' has shape [{}], expected [{}]", name, fmt::join(dims, ", "),
                           fmt::join(shape, ", "));
  return CheckLengthAndChecksum(desc, name, elements * DTypeSize(dtype), frame);
}

Status CheckBytes(proto::TensorDesc::Reader desc, std::string_view name,
                  std::span<const std::byte> frame) {
  if (std::string_view(desc.getName().cStr(), desc.getName().size()) != name)
    return InvalidArgument("tensor is named '{}', expected '{}'", desc.getName().cStr(), name);
  return CheckLengthAndChecksum(desc, name, frame.size(), frame);
}

Result<std::vector<int32_t>> ReadTokenList(capnp::List<int32_t>::Reader list, uint32_t tokens,
                                           std::string_view field) {
  if (list.size() != 0 && list.size() != tokens) {
    return InvalidArgument("{} has {} entries, the segment has {} tokens", field, list.size(),
                           tokens);
  }
  std::vector<int32_t> out;
  out.reserve(list.size());
  for (int32_t value : list) out.push_back(value);
  return out;
}

zmq::message_t ToFrame(capnp::MessageBuilder& message) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return zmq::message_t(bytes.begin(), bytes.size());
}

zmq::message_t BlobFrame(const Blob& blob) {
  if (blob.empty()) return zmq::message_t();
  auto* keep_alive = new Blob(blob);
  return zmq::message_t(
      const_cast<std::byte*>(blob.data()), blob.size(),
      [](void*, void* hint) { delete static_cast<Blob*>(hint); }, keep_alive);
}

Blob FrameToBlob(zmq::message_t frame) {
  auto owner = std::make_shared<zmq::message_t>(std::move(frame));
  return Blob(static_cast<const std::byte*>(owner->data()), owner->size(), owner);
}

AlignedFrame::AlignedFrame(const zmq::message_t& frame) {
  const size_t bytes = frame.size();
  if (bytes == 0 || bytes % sizeof(capnp::word) != 0) {
    status_ = Error(ErrorCode::kMalformedMessage,
                    "message frame of {} bytes is not a whole number of 8-byte words", bytes);
    return;
  }
  const size_t count = bytes / sizeof(capnp::word);
  if (reinterpret_cast<uintptr_t>(frame.data()) % alignof(capnp::word) == 0) {
    words_ = kj::arrayPtr(static_cast<const capnp::word*>(frame.data()), count);
  } else {
    copy_ = kj::heapArray<capnp::word>(count);
    std::memcpy(copy_.begin(), frame.data(), bytes);
    words_ = copy_.asPtr();
  }
}

capnp::ReaderOptions ReaderLimits(size_t frame_bytes) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = frame_bytes / sizeof(capnp::word) * 4 + 1024;
  options.nestingLimit = 16;
  return options;
}

}  // namespace kvcomm::wire
