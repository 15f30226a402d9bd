// kvcomm-generate: generate text with a Llama-family model directory (Hugging Face layout).
//   kvcomm-generate --model DIR --prompt "..." [--max-new-tokens N] [--temperature T] [--top-p P]
//                   [--seed S] [--device cpu|cuda] [--stats]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "agents/runtime/generate.h"

using namespace kvcomm;
using namespace kvcomm::runtime;

namespace {
int Fail(const Status& s) {
  std::fprintf(stderr, "kvcomm-generate: %s\n", s.ToString().c_str());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvcomm-generate: text generation with kvcomm's Llama-family runtime"};
  std::string model_dir, prompt, device = "cpu";
  GenerateOptions options;
  bool stats = false;
  std::vector<std::string> stops;
  app.add_option("--model", model_dir,
                 "model directory (config.json, *.safetensors, tokenizer.model)")
      ->required();
  app.add_option("--prompt", prompt, "prompt text")->required();
  app.add_option("--max-new-tokens", options.max_new_tokens, "tokens to generate at most")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--temperature", options.sampling.temperature, "0 = greedy");
  app.add_option("--top-p", options.sampling.top_p, "nucleus sampling mass");
  app.add_option("--seed", options.sampling.seed, "sampling seed");
  app.add_option("--stop", stops, "stop string (repeatable)");
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_flag("--stats", stats, "print TTFT and decode tokens/s");
  CLI11_PARSE(app, argc, argv);
  options.stop_strings = stops;

  auto load_start = std::chrono::steady_clock::now();
  auto model = Model::Load(model_dir, device == "cuda" ? Device::kCuda : Device::kCpu);
  if (!model.ok()) return Fail(model.status());
  auto tokenizer = Tokenizer::Load((std::filesystem::path(model_dir) / "tokenizer.model").string());
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  auto ids = (*tokenizer)->Encode(prompt);
  if (!ids.ok()) return Fail(ids.status());
  std::vector<int32_t> tokens;
  const int32_t bos = (*model)->config().bos_token_id >= 0 ? (*model)->config().bos_token_id
                                                           : (*tokenizer)->bos_id();
  if (bos >= 0) tokens.push_back(bos);
  tokens.insert(tokens.end(), ids->begin(), ids->end());
  options.stop_tokens = (*model)->config().eos_token_ids;
  if (options.stop_tokens.empty() && (*tokenizer)->eos_id() >= 0)
    options.stop_tokens.push_back((*tokenizer)->eos_id());

  const int64_t capacity =
      std::min<int64_t>((*model)->config().max_position_embeddings,
                        static_cast<int64_t>(tokens.size()) + options.max_new_tokens);
  if (static_cast<int64_t>(tokens.size()) > capacity) {
    return Fail(InvalidArgument("prompt of {} tokens exceeds the model's context of {}",
                                tokens.size(), capacity));
  }
  auto cache = (*model)->NewCache(capacity);
  if (!cache.ok()) return Fail(cache.status());
  auto result = Generate(**model, tokenizer->get(), tokens, *cache, options);
  if (!result.ok()) return Fail(result.status());
  std::printf("%s\n", result->text.c_str());
  if (stats) {
    std::fprintf(stderr,
                 "load %.2f s | prompt %lld tokens, TTFT %.1f ms (%.0f tokens/s) | decode %lld "
                 "tokens, %.1f tokens/s | stop: %s\n",
                 load_s, static_cast<long long>(result->prompt_tokens),
                 result->prefill_seconds * 1e3, result->prompt_tokens / result->prefill_seconds,
                 static_cast<long long>(result->decode_tokens), result->DecodeTokensPerSecond(),
                 result->stop_reason.c_str());
  }
  return 0;
}
