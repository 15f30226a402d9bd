// Compressing one KV segment to a budget: score -> allocate -> select -> encode.
//   method:    a MethodSpec (methods.h): token selection, quantization (kivi) or mixed precision
//              (mikv: SnapKV's choice kept in the row dtype, the rest quantized per token);
//   budget:    tokens per layer and head, a fraction of the tokens, or bytes (spec.h);
//   allocator: how a token budget is spread over layers and heads (allocate.h): uniform,
//              pyramid:beta=20, cake:tau1=1,tau2=1, each with heads=uniform|ada.
// Selections always keep the method's sinks and recent tokens within each (layer, head)'s count
// and meet a byte budget exactly (the largest token count whose token-subset encoding fits).
// Budgets that cannot be met (less than the tokens the method must keep, more than the
// segment holds, a byte budget below the smallest encoding) are refused with the numbers.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "common/kv_layout.h"
#include "kvstore/compress/codec.h"
#include "kvstore/compress/spec.h"

namespace kvcomm::kvstore::compress {

struct CompressRequest {
  KvLayout layout;            // the segment's shape; dtype = what kept values are stored as
  std::span<const float> kv;  // fp32, [layer][K|V][kv_head][token][head_dim]
  // Observation window (query-aware methods): [layer][q_head][window][head_dim], the queries of
  // the segment's last `window` tokens after RoPE.
  std::span<const float> queries;
  int64_t q_heads = 0, window = 0;
  // The queries are of tokens after the segment (LAQ's look-ahead draft): each sees every token,
  // and there may be more of them than the segment has tokens.
  bool queries_follow = false;
  // RoPE of the keys (methods that score pre-RoPE keys): head_dim / 2 inverse frequencies and
  // the position of the segment's first token.
  std::span<const float> inv_freq;
  int32_t first_position = 0;
  // DuoAttention: how much each (layer, kv head) needs the whole context ([layer][kv_head],
  // higher = retrieval head), from a calibration pass on the model.
  std::span<const float> head_scores;
  std::string method;  // e.g. "snapkv:window=32,kernel=7"
  std::string budget;  // e.g. "128", "25%", "1MiB"
  std::string allocator = "uniform";
};

enum class CompressedCodec { kTokenSubset, kKivi, kMixed, kGear, kMiniCache };

struct Compressed {
  CompressedCodec codec = CompressedCodec::kTokenSubset;
  std::vector<std::byte> bytes;  // the encoded segment; its size is exact
  std::vector<uint32_t> kept;    // token-subset: tokens kept per (layer, kv head)
};

Result<Compressed> Compress(const CompressRequest& request);

}  // namespace kvcomm::kvstore::compress
