#include "kvstore/compress/internal/every_token.h"

#include <cmath>

namespace kvcomm::kvstore::compress::internal {
namespace {

struct Quantization {
  int bits;
  int64_t group;
};

// bits= (2, 4 or 8) and group= (channels, dividing head_dim into whole bytes of codes).
Result<Quantization> ParseQuantization(const MethodSpec& spec, const KvLayout& layout,
                                       int64_t default_bits) {
  KVCOMM_ASSIGN_OR_RETURN(int64_t bits, IntParam(spec, "bits", default_bits, 2, 8));
  if (bits != 2 && bits != 4 && bits != 8)
    return InvalidArgument("method '{}': bits={} must be 2, 4 or 8", spec.name, bits);
  KVCOMM_ASSIGN_OR_RETURN(int64_t group, IntParam(spec, "group", 32, 4, 4096));
  if (layout.head_dim % group != 0 || group * bits % 8 != 0)
    return InvalidArgument("method '{}': group={} must divide head_dim {} (and whole bytes)",
                           spec.name, group, layout.head_dim);
  return Quantization{static_cast<int>(bits), group};
}

// Every-token methods take a byte budget or none; the encoding must fit it.
Status CheckBudget(const MethodSpec& spec, const Budget& budget, uint64_t bytes) {
  if (budget.kind == Budget::Kind::kTokens || budget.kind == Budget::Kind::kFraction ||
      budget.kind == Budget::Kind::kLoss)
    return InvalidArgument("method '{}' keeps every token: give a byte budget or none", spec.name);
  if (budget.kind == Budget::Kind::kBytes && bytes > budget.value)
    return InvalidArgument("method '{}' needs {} bytes with these parameters; the budget is {}",
                           spec.name, bytes, static_cast<uint64_t>(budget.value));
  return Status::Ok();
}

Result<Compressed> Kivi(const CompressRequest& r, const MethodSpec& spec, const Budget& budget) {
  KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"bits", "group", "residual"}));
  KVCOMM_ASSIGN_OR_RETURN(auto q, ParseQuantization(spec, r.layout, 2));
  KiviParams p{q.bits, q.group, 128};
  KVCOMM_ASSIGN_OR_RETURN(p.residual, IntParam(spec, "residual", 128, 0, KvLayout::kMaxTokens));
  KVCOMM_RETURN_IF_ERROR(CheckBudget(spec, budget, KiviBytes(r.layout, p)));
  return Compressed{CompressedCodec::kKivi, EncodeKivi(r.layout, r.kv, p), {}};
}

Result<Compressed> Gear(const CompressRequest& r, const MethodSpec& spec, const Budget& budget) {
  KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"bits", "group", "rank", "outliers"}));
  KVCOMM_ASSIGN_OR_RETURN(auto q, ParseQuantization(spec, r.layout, 4));
  const int64_t T = r.layout.tokens, D = r.layout.head_dim;
  GearParams p{q.bits, q.group, 4, 0};
  KVCOMM_ASSIGN_OR_RETURN(
      p.rank, IntParam(spec, "rank", std::min<int64_t>(4, std::min(T, D)), 1, std::min(T, D)));
  KVCOMM_ASSIGN_OR_RETURN(double percent, NumberParam(spec, "outliers", 2, 0, 50));
  p.outliers = static_cast<int64_t>(percent / 100 * static_cast<double>(T * D));
  KVCOMM_RETURN_IF_ERROR(CheckBudget(spec, budget, GearBytes(r.layout, p)));
  return Compressed{CompressedCodec::kGear, EncodeGear(r.layout, r.kv, p), {}};
}

Result<Compressed> MiniCache(const CompressRequest& r, const MethodSpec& spec,
                             const Budget& budget) {
  KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"start", "retain"}));
  const int64_t layers = r.layout.num_layers;
  MiniCacheParams p;
  KVCOMM_ASSIGN_OR_RETURN(p.start, IntParam(spec, "start", layers / 2, 0, layers));
  KVCOMM_ASSIGN_OR_RETURN(double percent, NumberParam(spec, "retain", 5, 0, 100));
  p.retained = std::llround(percent / 100 * r.layout.tokens);
  KVCOMM_RETURN_IF_ERROR(CheckBudget(spec, budget, MiniCacheBytes(r.layout, p)));
  return Compressed{CompressedCodec::kMiniCache, EncodeMiniCache(r.layout, r.kv, p), {}};
}

}  // namespace

Result<std::optional<Compressed>> CompressEveryToken(const CompressRequest& r,
                                                     const MethodSpec& spec, const Budget& budget) {
  Result<Compressed> (*encode)(const CompressRequest&, const MethodSpec&, const Budget&) = nullptr;
  if (spec.name == "kivi") encode = Kivi;
  if (spec.name == "gear") encode = Gear;
  if (spec.name == "minicache") encode = MiniCache;
  if (!encode) return std::optional<Compressed>();
  KVCOMM_ASSIGN_OR_RETURN(auto compressed, encode(r, spec, budget));
  return std::optional<Compressed>(std::move(compressed));
}

Result<std::pair<MixedParams, MethodSpec>> ParseMikv(const MethodSpec& spec,
                                                     const KvLayout& layout) {
  KVCOMM_RETURN_IF_ERROR(CheckParams(spec, {"bits", "group", "window", "kernel"}));
  KVCOMM_ASSIGN_OR_RETURN(auto q, ParseQuantization(spec, layout, 2));
  MethodSpec scorer{"snapkv", {}};
  for (const char* key : {"window", "kernel"})
    if (auto it = spec.params.find(key); it != spec.params.end()) scorer.params[key] = it->second;
  return std::make_pair(MixedParams{q.bits, q.group}, scorer);
}

}  // namespace kvcomm::kvstore::compress::internal
