// What the pipeline benchmarks share: greedy replies, the full-prefill (dense) turn they compare
// against, and the untimed warm-up of the device's libraries.
#pragma once

#include <algorithm>
#include <chrono>
#include <span>
#include <vector>

#include "agents/runtime/model.h"

namespace kvcomm::bench {

inline int32_t Argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// A greedy reply of `tokens` tokens, the first from `logits` (the prompt's last), decoding the
// rest over `cache`; `seconds` gets the time the decoding took.
inline Result<std::vector<int32_t>> GreedyReply(const runtime::Model& model,
                                                std::span<const float> logits,
                                                runtime::KvCache& cache, int64_t tokens,
                                                double* seconds) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<int32_t> reply = {Argmax(logits)};
  while (static_cast<int64_t>(reply.size()) < tokens) {
    const int32_t next = reply.back();
    KVCOMM_ASSIGN_OR_RETURN(auto step, model.Forward(std::span(&next, 1), cache));
    reply.push_back(Argmax(step));
  }
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return reply;
}

struct DenseTurnTiming {
  double ttft = 0, decode = 0;
  std::vector<int32_t> reply;
  std::vector<float> logits;  // the prompt's last (the first reply token's)
};

// The whole prompt prefilled (TTFT), then a greedy reply; the cache is allocated untimed.
inline Result<DenseTurnTiming> DenseTurn(const runtime::Model& model,
                                         std::span<const int32_t> prompt, int64_t reply_tokens) {
  KVCOMM_ASSIGN_OR_RETURN(auto cache,
                          model.NewCache(static_cast<int64_t>(prompt.size()) + reply_tokens));
  DenseTurnTiming turn;
  const auto start = std::chrono::steady_clock::now();
  KVCOMM_ASSIGN_OR_RETURN(auto logits, model.Forward(prompt, cache));
  turn.ttft = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  KVCOMM_ASSIGN_OR_RETURN(turn.reply,
                          GreedyReply(model, logits, cache, reply_tokens, &turn.decode));
  turn.logits = std::move(logits);
  return turn;
}

// Untimed: brings up the device's libraries and kernels.
inline Status WarmUp(const runtime::Model& model) {
  KVCOMM_ASSIGN_OR_RETURN(auto cache, model.NewCache(64));
  const std::vector<int32_t> tokens(32, 5);
  return model.Forward(tokens, cache).status();
}

}  // namespace kvcomm::bench
