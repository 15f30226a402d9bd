// runtime_bench: prefill and decode throughput of kvcomm's runtime on random weights.
//   runtime_bench --device cpu                       ~20M-parameter model, 1k-token prefill
//   runtime_bench --device cuda --shape llama3-8b    Llama-3-8B shape in bf16, 1k/4k/16k prefill
// Each number is the median of --repeat runs after one warm-up run.
#if KVCOMM_HAVE_CUDA
#include <cuda_profiler_api.h>
#endif

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "agents/runtime/model.h"
#include "bench/model_shapes.h"
#include "kernels/cpu/parallel.h"

using namespace kvcomm;
using namespace kvcomm::runtime;
using Clock = std::chrono::steady_clock;

namespace {

void Check(const Status& s) { bench::ExitOnError("runtime_bench", s); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Starts or stops what a profiler started with `--profile-from-start off` records.
void ProfilerRange(bool start) {
#if KVCOMM_HAVE_CUDA
  if (start) {
    cudaProfilerStart();
  } else {
    cudaProfilerStop();
  }
#else
  std::fprintf(stderr, "runtime_bench: --profile needs the CUDA build\n");
  std::exit(2);
#endif
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
  bool profile = false;
  app.add_flag("--profile", profile,
               "bracket the timed passes of 1 and 16 tokens after 3600 cached in "
               "cudaProfilerStart/Stop, for `ncu --profile-from-start off`");
  CLI11_PARSE(app, argc, argv);
  const bool cuda = device == "cuda";
  if (shape.empty()) shape = cuda ? "llama3-8b" : "tiny-20m";
  if (prefill.empty())
    prefill = cuda ? std::vector<int64_t>{1024, 4096, 16384} : std::vector<int64_t>{1024};
  if (decode == 0) decode = cuda ? 128 : 64;

  const ModelConfig config = bench::Shape(shape);
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
      shape.c_str(), bench::Parameters(config) / 1e9, cuda ? "bf16" : "fp32", load_s);
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
  // A few tokens over a long cached context: what a turn that reuses most of its prompt still
  // computes (one token takes the decode path: GEMV and split-key attention).
  auto context = random_tokens(3600);
  auto long_cache = (*model)->NewCache(3600 + 32);
  Check(long_cache.status());
  Check((*model)->Forward(context, *long_cache).status());
  for (int64_t n : {1, 2, 4, 5, 8, 16, 32}) {
    auto ids = random_tokens(n);
    std::vector<double> times;
    for (int r = 0; r <= repeat; ++r) {
      long_cache->Truncate(3600);
      const bool profiled = profile && r == repeat && (n == 1 || n == 16);
      if (profiled) ProfilerRange(true);
      auto start = Clock::now();
      Check((*model)->Forward(ids, *long_cache).status());
      if (profiled) ProfilerRange(false);
      if (r > 0) times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
    std::printf("%-10s %10lld %12.1f %14.0f   (after 3600 cached tokens)\n", "prefill",
                static_cast<long long>(n), Median(times) * 1e3, n / Median(times));
  }
  return 0;
}
