#include "daemon/internal/compress_wire.h"

#include <cmath>
#include <cstring>

#include "daemon/internal/convert.h"
#include "kernels/ops.h"
#include "kvstore/compress/compress.h"
#include "schemas/wire.h"

namespace kvcomm::daemon::internal {
namespace {

constexpr size_t kMaxSpecBytes = 256;  // method, budget and allocator strings

Result<std::string> ReadSpec(capnp::Text::Reader text, std::string_view field) {
  if (text.size() > kMaxSpecBytes)
    return InvalidArgument("GetCompressed {} has {} bytes, at most {}", field, text.size(),
                           kMaxSpecBytes);
  return std::string(text.cStr(), text.size());
}

// The segment's KV in fp32, [layer][K|V][kv_head][token][head_dim].
Result<std::vector<float>> ToFloat(const kvstore::Segment& segment) {
  const KvLayout& layout = segment.meta.layout;
  const int64_t n = int64_t{layout.num_layers} * 2 * layout.ElementsPerHalf();
  std::vector<float> kv(n);
  KVCOMM_RETURN_IF_ERROR(
      kernels::ConvertDType({const_cast<std::byte*>(segment.payload.data()), layout.dtype, {n}},
                            {kv.data(), DType::kF32, {n}}));
  // Scores and selections are meaningless (and sorting undefined) over NaN or infinity.
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(kv[i]))
      return InvalidArgument(
          "the segment holds a non-finite KV value (element {}): it cannot be compressed", i);
  return kv;
}

}  // namespace

Status ServeCompressed(kvstore::TieredStore& store, const kvstore::Scope& scope,
                       proto::GetCompressed::Reader request,
                       const std::vector<zmq::message_t>& frames,
                       proto::CompressedResult::Builder out,
                       std::vector<zmq::message_t>& payload_out) {
  auto tensors = request.getTensors();
  if (tensors.size() > 1 || frames.size() - 1 != tensors.size())
    return InvalidArgument(
        "GetCompressed carries {} tensor descriptions and {} payload frames; expected none or "
        "one 'queries' tensor in one frame",
        tensors.size(), frames.size() - 1);
  KVCOMM_ASSIGN_OR_RETURN(auto kind, ReadKeyKind(request.getKind()));
  KVCOMM_ASSIGN_OR_RETURN(auto segment, store.Get(wire::ReadKey(request.getKey()), kind, scope));
  const KvLayout& layout = segment.meta.layout;

  kvstore::compress::CompressRequest r;
  KVCOMM_ASSIGN_OR_RETURN(r.method, ReadSpec(request.getMethod(), "method"));
  KVCOMM_ASSIGN_OR_RETURN(r.budget, ReadSpec(request.getBudget(), "budget"));
  KVCOMM_ASSIGN_OR_RETURN(r.allocator, ReadSpec(request.getAllocator(), "allocator"));
  if (r.allocator.empty()) r.allocator = "uniform";
  const auto row_dtype = static_cast<uint32_t>(request.getRowDtype());
  if (!IsValidDType(row_dtype) || static_cast<DType>(row_dtype) == DType::kI32)
    return InvalidArgument("GetCompressed rowDtype {} is not f32, f16 or bf16", row_dtype);
  r.layout = layout;
  r.layout.dtype = static_cast<DType>(row_dtype);

  std::vector<float> queries;
  r.q_heads = request.getQHeads();
  r.window = request.getWindow();
  r.queries_follow = request.getQueriesFollow();
  if (tensors.size() == 1) {
    const uint64_t shape[] = {layout.num_layers, request.getQHeads(), request.getWindow(),
                              layout.head_dim};
    std::span<const std::byte> bytes(static_cast<const std::byte*>(frames[1].data()),
                                     frames[1].size());
    KVCOMM_RETURN_IF_ERROR(wire::CheckTensor(tensors[0], "queries", DType::kF32, shape, bytes));
    queries.resize(bytes.size() / sizeof(float));
    std::memcpy(queries.data(), bytes.data(), bytes.size());  // frames need not be aligned
    for (float q : queries)
      if (!std::isfinite(q))
        return InvalidArgument("GetCompressed queries hold a non-finite value");
    r.queries = queries;
  } else if (r.q_heads != 0 || r.window != 0) {
    return InvalidArgument("GetCompressed gives qHeads / window but no 'queries' tensor");
  }

  const auto rope = request.getRopeInvFreq();
  if (rope.size() != 0 && rope.size() != layout.head_dim / 2)
    return InvalidArgument("GetCompressed ropeInvFreq has {} values; head_dim {} needs {}",
                           rope.size(), layout.head_dim, layout.head_dim / 2);
  std::vector<float> inv_freq(rope.size());
  for (unsigned i = 0; i < rope.size(); ++i) inv_freq[i] = rope[i];
  if (!inv_freq.empty()) {
    for (float f : inv_freq)
      if (!std::isfinite(f)) return InvalidArgument("GetCompressed ropeInvFreq is not finite");
    const auto& positions = segment.meta.positions;
    for (size_t i = 1; i < positions.size(); ++i)
      if (positions[i] != positions[0] + static_cast<int32_t>(i))
        return InvalidArgument(
            "the segment's positions are not contiguous: its keys cannot be un-rotated");
  }
  r.inv_freq = inv_freq;
  const auto scores = request.getHeadScores();
  if (scores.size() != 0 && scores.size() != uint64_t{layout.num_layers} * layout.kv_heads)
    return InvalidArgument("GetCompressed headScores has {} values; the segment has {} x {} heads",
                           scores.size(), layout.num_layers, layout.kv_heads);
  std::vector<float> head_scores(scores.size());
  for (unsigned i = 0; i < scores.size(); ++i) head_scores[i] = scores[i];
  r.head_scores = head_scores;
  r.first_position =
      segment.meta.positions.empty() ? segment.meta.first_position : segment.meta.positions[0];

  KVCOMM_ASSIGN_OR_RETURN(auto kv, ToFloat(segment));
  r.kv = kv;
  KVCOMM_ASSIGN_OR_RETURN(auto compressed, kvstore::compress::Compress(r));

  auto where = store.Lookup({{segment.meta.context_key, kvstore::KeyKind::kContext}}, scope);
  FillSegmentInfo(out.initInfo(), segment.meta, where[0].tier);
  // kvstore's CompressedCodec and the protocol's are numbered alike.
  out.setCodec(static_cast<proto::CompressedCodec>(compressed.codec));
  auto kept = out.initKept(static_cast<unsigned>(compressed.kept.size()));
  for (unsigned i = 0; i < kept.size(); ++i) kept.set(i, compressed.kept[i]);
  wire::DescribeBytes(out.initTensors(1)[0], "compressed", compressed.bytes);
  payload_out.emplace_back(compressed.bytes.data(), compressed.bytes.size());
  return Status::Ok();
}

}  // namespace kvcomm::daemon::internal
