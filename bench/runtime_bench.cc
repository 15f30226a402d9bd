// runtime_bench: prefill and decode throughput of kvcomm's runtime on random weights.
//   runtime_bench --device cpu                       ~20M-parameter model, 1k-token prefill
//   runtime_bench --device cuda --shape llama3-8b    Llama-3-8B shape in bf16, 1k/4k/16k prefill
// Each number is the median of --repeat runs after one warm-up run.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "agents/runtime/model.h"
#include "kernels/cpu/parallel.h"

using namespace kvcomm;
using namespace kvcomm::runtime;
using Clock = std::chrono::steady_clock;

namespace {

void Check(const Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "runtime_bench: %s\n", s.ToString().c_str());
    std::exit(1);
  }
}

ModelConfig Shape(const std::string& name) {
  std::string json;
  if (name == "llama3-8b") {
    json =
        R"({"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "rope_theta": 500000.0,
        "max_position_embeddings": 131072, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})";
  } else if (name == "tiny-20m") {
    json =
        R"({"model_type": "llama", "vocab_size": 8192, "hidden_size": 512, "intermediate_size": 1408,
        "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 4, "tie_word_embeddings": true,
        "max_position_embeddings": 2048})";
  } else {
    Check(InvalidArgument("unknown shape '{}' (llama3-8b, tiny-20m)", name));
  }
  auto config = ModelConfig::FromJson(json, name);
  Check(config.status());
  return *config;
}

int64_t Parameters(const ModelConfig& c) {
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const int64_t layer = c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size +
                        2 * c.hidden_size;
  return c.num_layers * layer + c.vocab_size * c.hidden_size * (c.tie_word_embeddings ? 1 : 2) +
         c.hidden_size;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"runtime_bench: prefill and decode throughput on random weights"};
  std::string device = "cpu", shape;
  std::vector<int64_t> prefill;
  int64_t decode = 0;
  int repeat = 3;
  app.add_option("--device", device)->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--shape", shape,
                 "llama3-8b or tiny-20m (default: tiny-20m on cpu, llama3-8b on cuda)");
  app.add_option("--prefill", prefill,
                 "prompt lengths (default 1024 on cpu; 1024 4096 16384 on cuda)");
  app.add_option("--decode", decode,
                 "decode steps after a 1024-token prompt (default 64 cpu, 128 cuda)");
  app.add_option("--repeat", repeat)->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);
  const bool cuda = device == "cuda";
  if (shape.empty()) shape = cuda ? "llama3-8b" : "tiny-20m";
  if (prefill.empty())
    prefill = cuda ? std::vector<int64_t>{1024, 4096, 16384} : std::vector<int64_t>{1024};
  if (decode == 0) decode = cuda ? 128 : 64;

  const ModelConfig config = Shape(shape);
  auto load_start = Clock::now();
  auto model = cuda ? Model::RandomOnGpu(config, 1)
                    : Model::FromWeights(config, RandomWeights(config, 1), Device::kCpu);
  Check(model.status());
  const double load_s = std::chrono::duration<double>(Clock::now() - load_start).count();
  std::printf(
      "runtime_bench: kvcomm runtime, %s, shape %s (%.2fB parameters, %s), random weights made in "
      "%.1f s\n",
      cuda ? kernels::CudaDeviceDescription().c_str()
           : fmt::format("CPU, {} threads", kernels::cpu::ParallelThreads()).c_str(),
      shape.c_str(), Parameters(config) / 1e9, cuda ? "bf16" : "fp32", load_s);
  std::printf("%-10s %10s %12s %14s\n", "phase", "tokens", "median ms", "tokens/s");

  std::mt19937 rng(7);
  auto random_tokens = [&](int64_t n) {
    std::vector<int32_t> ids(n);
    for (auto& id : ids) id = static_cast<int32_t>(rng() % config.vocab_size);
    return ids;
  };
  for (int64_t n : prefill) {
    auto ids = random_tokens(n);
    std::vector<double> times;
    for (int r = 0; r <= repeat; ++r) {
      auto cache = (*model)->NewCache(n);
      Check(cache.status());
      auto start = Clock::now();
      Check((*model)->Forward(ids, *cache).status());
      if (r > 0) times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
    const double t = Median(times);
    std::printf("%-10s %10lld %12.1f %14.0f\n", "prefill", static_cast<long long>(n), t * 1e3,
                n / t);
  }
  {
    auto ids = random_tokens(1024);
    std::vector<double> times;
    for (int r = 0; r <= repeat; ++r) {
      auto cache = (*model)->NewCache(1024 + decode);
      Check(cache.status());
      auto logits = (*model)->Forward(ids, *cache);
      Check(logits.status());
      auto start = Clock::now();
      for (int64_t step = 0; step < decode; ++step) {
        const int32_t next = static_cast<int32_t>(std::max_element(logits->begin(), logits->end()) -
                                                  logits->begin());
        logits = (*model)->Forward(std::span(&next, 1), *cache);
        Check(logits.status());
      }
      if (r > 0) times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
    const double t = Median(times);
    std::printf("%-10s %10lld %12.1f %14.1f   (batch 1, after a 1024-token prompt)\n", "decode",
                static_cast<long long>(decode), t * 1e3, decode / t);
  }
  return 0;
}
