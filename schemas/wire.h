// The protocol's C++ binding, shared by kvcommd and the client library: conversions between
// wire structs and common/ value types, and the framing of messages into ZeroMQ frames.
// Readers of untrusted bytes here validate and return Status; Cap'n Proto accessors may still
// throw kj::Exception on malformed input, which callers catch at the socket boundary.
#pragma once

#include <capnp/message.h>
#include <kj/array.h>

#include <span>
#include <vector>
#include <zmq.hpp>

#include "common/blob.h"
#include "common/hash.h"
#include "common/kv_layout.h"
#include "schemas/kvcomm.capnp.h"

namespace kvcomm::wire {

Hash128 ReadKey(proto::Key128::Reader key);
void WriteKey(proto::Key128::Builder out, const Hash128& key);

// Validates dims and dtype (naming the bad field).
Result<KvLayout> ReadShape(proto::KvShape::Reader shape);
void WriteShape(proto::KvShape::Builder out, const KvLayout& layout);

// The payload tensor of a segment: name "kv", shape [layers, 2, kv_heads, tokens, head_dim].
void DescribeKvTensor(proto::TensorDesc::Builder out, const KvLayout& layout, uint64_t checksum);
// Checks a description against the layout and the frame's bytes, checksum included.
Status CheckKvTensor(proto::TensorDesc::Reader desc, const KvLayout& layout,
                     std::span<const std::byte> frame);
// The same without the checksum, for a payload of `bytes` that did not travel in a frame.
Status CheckKvTensorShape(proto::TensorDesc::Reader desc, const KvLayout& layout, uint64_t bytes);

// Any other tensor: a name, dtype and shape (byteLength = elements x dtype size), or, for opaque
// bytes (an encoded segment), the name alone with shape [bytes] and dtype f32 unused.
void DescribeTensor(proto::TensorDesc::Builder out, std::string_view name, DType dtype,
                    std::span<const uint64_t> shape, std::span<const std::byte> frame);
void DescribeBytes(proto::TensorDesc::Builder out, std::string_view name,
                   std::span<const std::byte> frame);
// Checks name, dtype, shape, byte length and checksum against the frame.
Status CheckTensor(proto::TensorDesc::Reader desc, std::string_view name, DType dtype,
                   std::span<const uint64_t> shape, std::span<const std::byte> frame);
// Checks name, byte length and checksum (opaque bytes).
Status CheckBytes(proto::TensorDesc::Reader desc, std::string_view name,
                  std::span<const std::byte> frame);

// A list that is either empty or has exactly `tokens` entries.
Result<std::vector<int32_t>> ReadTokenList(capnp::List<int32_t>::Reader list, uint32_t tokens,
                                           std::string_view field);

// Serialises a message into one frame.
zmq::message_t ToFrame(capnp::MessageBuilder& message);
// A frame that sends the blob's bytes without copying them; the frame keeps the blob alive.
zmq::message_t BlobFrame(const Blob& blob);
// Takes ownership of a received frame as a Blob, without copying.
Blob FrameToBlob(zmq::message_t frame);

// Word-aligned view of a received Cap'n Proto frame (copied only if the frame is misaligned).
class AlignedFrame {
 public:
  explicit AlignedFrame(const zmq::message_t& frame);
  const Status& status() const { return status_; }  // non-OK if the size is not whole words
  kj::ArrayPtr<const capnp::word> words() const { return words_; }

 private:
  kj::Array<capnp::word> copy_;
  kj::ArrayPtr<const capnp::word> words_;
  Status status_;
};

// Reader limits sized to the frame, so a small hostile message cannot make us traverse much.
capnp::ReaderOptions ReaderLimits(size_t frame_bytes);

}  // namespace kvcomm::wire
