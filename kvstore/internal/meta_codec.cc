#include "kvstore/internal/meta_codec.h"

#include <cstring>
#include <type_traits>

namespace kvcomm::kvstore::internal {
namespace {

constexpr uint8_t kVersion = 1;

class Writer {
 public:
  template <typename T>
  void Put(T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    out_.append(reinterpret_cast<const char*>(&value), sizeof(T));
  }
  void PutString(std::string_view s) {
    Put<uint32_t>(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  void PutInts(const std::vector<int32_t>& v) {
    Put<uint32_t>(static_cast<uint32_t>(v.size()));
    if (!v.empty())
      out_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(int32_t));
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <typename T>
  bool Get(T* value) {
    if (in_.size() < sizeof(T)) return false;
    std::memcpy(value, in_.data(), sizeof(T));
    in_.remove_prefix(sizeof(T));
    return true;
  }
  bool GetString(std::string* s) {
    uint32_t n;
    if (!Get(&n) || in_.size() < n) return false;
    s->assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool GetInts(std::vector<int32_t>* v) {
    uint32_t n;
    if (!Get(&n) || in_.size() / sizeof(int32_t) < n) return false;
    v->resize(n);
    if (n > 0) std::memcpy(v->data(), in_.data(), n * sizeof(int32_t));
    in_.remove_prefix(n * sizeof(int32_t));
    return true;
  }
  bool done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

}  // namespace

std::string EncodeMeta(const SegmentMeta& m) {
  Writer w;
  w.Put(kVersion);
  w.Put(m.context_key);
  w.Put(m.content_key);
  w.Put(m.fingerprint);
  w.PutString(m.name_space);
  w.Put(m.layout.num_layers);
  w.Put(m.layout.kv_heads);
  w.Put(m.layout.tokens);
  w.Put(m.layout.head_dim);
  w.Put(static_cast<uint8_t>(m.layout.dtype));
  w.Put(static_cast<uint8_t>(m.codec));
  w.PutInts(m.token_ids);
  w.PutInts(m.positions);
  w.Put(m.first_position);
  w.Put(m.prefix_hash);
  w.Put(m.payload_bytes);
  w.Put(m.checksum);
  w.Put(m.created_unix_ms);
  w.Put(m.last_access_unix_ms);
  w.Put(m.access_count);
  return w.Take();
}

Result<SegmentMeta> DecodeMeta(std::string_view record) {
  Reader r(record);
  SegmentMeta m;
  uint8_t version = 0, dtype = 0, codec = 0;
  bool ok = r.Get(&version);
  if (ok && version != kVersion) {
    return Error(ErrorCode::kDataLoss, "segment metadata record has version {}, expected {}",
                 version, kVersion);
  }
  ok = ok && r.Get(&m.context_key) && r.Get(&m.content_key) && r.Get(&m.fingerprint) &&
       r.GetString(&m.name_space) && r.Get(&m.layout.num_layers) && r.Get(&m.layout.kv_heads) &&
       r.Get(&m.layout.tokens) && r.Get(&m.layout.head_dim) && r.Get(&dtype) && r.Get(&codec) &&
       r.GetInts(&m.token_ids) && r.GetInts(&m.positions) && r.Get(&m.first_position) &&
       r.Get(&m.prefix_hash) && r.Get(&m.payload_bytes) && r.Get(&m.checksum) &&
       r.Get(&m.created_unix_ms) && r.Get(&m.last_access_unix_ms) && r.Get(&m.access_count) &&
       r.done();
  if (!ok)
    return Error(ErrorCode::kDataLoss, "segment metadata record of {} bytes is malformed",
                 record.size());
  if (!IsValidDType(dtype) || codec != static_cast<uint8_t>(Codec::kRaw)) {
    return Error(ErrorCode::kDataLoss, "segment metadata record has dtype {} / codec {}", dtype,
                 codec);
  }
  m.layout.dtype = static_cast<DType>(dtype);
  m.codec = static_cast<Codec>(codec);
  Status layout = m.layout.Validate();
  if (!layout.ok() || m.layout.PayloadBytes() != m.payload_bytes) {
    return Error(ErrorCode::kDataLoss, "segment metadata record has an inconsistent layout {}",
                 m.layout.ToString());
  }
  return m;
}

}  // namespace kvcomm::kvstore::internal
