#include "agents/runtime/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <optional>

namespace kvcomm::runtime {

using Clock = std::chrono::steady_clock;

Status SamplingOptions::Validate() const {
  if (!(temperature >= 0) || !std::isfinite(temperature)) {
    return InvalidArgument("temperature must be a finite number >= 0, got {}", temperature);
  }
  if (!(top_p > 0 && top_p <= 1)) return InvalidArgument("top_p must be in (0, 1], got {}", top_p);
  return Status::Ok();
}

int32_t Sampler::Sample(std::span<const float> logits) {
  if (options_.temperature == 0) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<double> probs(logits.size());
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    probs[i] = std::exp((logits[i] - max_logit) / options_.temperature);
    total += probs[i];
  }
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
  });
  // Keep the smallest prefix whose mass reaches top_p (always at least one token).
  size_t keep = 0;
  double mass = 0;
  while (keep < order.size() && (keep == 0 || mass < options_.top_p * total))
    mass += probs[order[keep++]];
  std::uniform_real_distribution<double> uniform(0.0, mass);
  double pick = uniform(rng_);
  for (size_t i = 0; i < keep; ++i) {
    pick -= probs[order[i]];
    if (pick <= 0) return order[i];
  }
  return order[keep - 1];
}

Result<GenerateResult> Generate(const Model& model, const Tokenizer* tokenizer,
                                std::span<const int32_t> prompt, KvCache& cache,
                                const GenerateOptions& options) {
  KVCOMM_RETURN_IF_ERROR(options.sampling.Validate());
  if (options.max_new_tokens < 0) return InvalidArgument("max_new_tokens must be >= 0");
  if (!options.stop_strings.empty() && tokenizer == nullptr) {
    return InvalidArgument("stop strings need a tokenizer");
  }
  if (prompt.empty()) return InvalidArgument("the prompt has no tokens");
  GenerateResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  Sampler sampler(options.sampling);

  KVCOMM_RETURN_IF_ERROR(options.morph.Validate());
  std::optional<MorphKv> morph;
  if (options.morph.capacity > 0) morph.emplace(model.config(), options.morph);
  // With MorphKV every forward's last queries are kept, and the cache trimmed after it.
  auto forward = [&](std::span<const int32_t> tokens) -> Result<std::vector<float>> {
    if (!morph) return model.Forward(tokens, cache);
    QueryCapture capture{std::min<int64_t>(options.morph.recent, tokens.size()), {}};
    KVCOMM_ASSIGN_OR_RETURN(auto logits, model.Forward(tokens, cache, false, &capture));
    morph->Observe(capture);
    KVCOMM_RETURN_IF_ERROR(morph->Trim(cache));
    return logits;
  };

  auto start = Clock::now();
  std::vector<float> logits;
  if (options.gaps_before.empty()) {
    KVCOMM_ASSIGN_OR_RETURN(logits, forward(prompt));
  } else {
    if (morph) return InvalidArgument("MorphKV does not take a prompt with gaps");
    std::vector<Model::TokenRun> runs = options.gaps_before;
    int64_t position = runs.back().position + static_cast<int64_t>(runs.back().tokens.size());
    while (position < cache.capacity() && cache.IsValid(position)) ++position;
    runs.push_back({prompt, position});
    KVCOMM_ASSIGN_OR_RETURN(logits, model.ForwardRuns(runs, cache));
  }
  result.prefill_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (options.keep_prompt_logits) result.prompt_logits = logits;
  result.stop_reason = "max_new_tokens";

  auto decode_start = Clock::now();
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const int32_t next = sampler.Sample(logits);
    if (std::find(options.stop_tokens.begin(), options.stop_tokens.end(), next) !=
        options.stop_tokens.end()) {
      result.stop_reason = "stop_token";
      break;
    }
    result.tokens.push_back(next);
    if (!options.stop_strings.empty()) {
      KVCOMM_ASSIGN_OR_RETURN(std::string text, tokenizer->Decode(result.tokens));
      bool stopped = false;
      for (const auto& stop : options.stop_strings) {
        auto at = text.find(stop);
        if (at != std::string::npos) {
          result.text = text.substr(0, at);
          stopped = true;
        }
      }
      if (stopped) {
        result.stop_reason = "stop_string";
        break;
      }
    }
    if (step + 1 == options.max_new_tokens) break;
    if (cache.length() >= cache.capacity()) {
      result.stop_reason = "context_full";
      break;
    }
    KVCOMM_ASSIGN_OR_RETURN(logits, forward(std::span<const int32_t>(&next, 1)));
    ++result.decode_tokens;
  }
  result.decode_seconds = std::chrono::duration<double>(Clock::now() - decode_start).count();
  if (tokenizer != nullptr && result.stop_reason != "stop_string") {
    KVCOMM_ASSIGN_OR_RETURN(result.text, tokenizer->Decode(result.tokens));
  }
  return result;
}

Result<std::vector<float>> DraftQueries(const Model& model, KvCache& cache, int32_t first,
                                        int64_t tokens) {
  if (tokens < 1) return InvalidArgument("a draft needs at least one token, got {}", tokens);
  const auto& c = model.config();
  const int64_t per_token = int64_t{c.num_heads} * c.head_dim;
  std::vector<float> queries(int64_t{c.num_layers} * per_token * tokens);
  int32_t token = first;
  for (int64_t i = 0; i < tokens; ++i) {
    QueryCapture step{1, {}};
    const int32_t input[] = {token};
    KVCOMM_ASSIGN_OR_RETURN(auto logits, model.Forward(input, cache, false, &step));
    for (int64_t layer = 0; layer < c.num_layers; ++layer)
      for (int64_t h = 0; h < c.num_heads; ++h)
        std::copy_n(step.queries.data() + (layer * c.num_heads + h) * c.head_dim, c.head_dim,
                    queries.data() + ((layer * c.num_heads + h) * tokens + i) * c.head_dim);
    token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  return queries;
}

}  // namespace kvcomm::runtime
