#include "agents/runtime/model.h"

#include <filesystem>

#include "agents/runtime/internal/engine.h"

namespace kvcomm::runtime {

Model::Model(ModelConfig config, Hash128 weights_hash, std::unique_ptr<internal::Engine> engine)
    : config_(std::move(config)),
      fingerprint_(ComputeModelFingerprint(config_.Architecture(), weights_hash)),
      engine_(std::move(engine)) {}

Model::~Model() = default;

Device Model::device() const { return engine_->device(); }

Result<std::unique_ptr<Model>> Model::Load(const std::string& model_dir, Device device) {
  const std::string config_path = (std::filesystem::path(model_dir) / "config.json").string();
  KVCOMM_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromFile(config_path));
  KVCOMM_ASSIGN_OR_RETURN(ModelWeights weights, LoadWeights(model_dir, config));
  return FromWeights(std::move(config), std::move(weights), device);
}

Result<std::unique_ptr<Model>> Model::FromWeights(ModelConfig config, ModelWeights weights,
                                                  Device device) {
  const Hash128 hash = weights.content_hash;
  std::unique_ptr<internal::Engine> engine;
  if (device == Device::kCpu) {
    engine = internal::MakeCpuEngine(config, std::move(weights));
  } else {
    KVCOMM_ASSIGN_OR_RETURN(engine, internal::MakeCudaEngine(config, &weights, 0));
  }
  return std::unique_ptr<Model>(new Model(std::move(config), hash, std::move(engine)));
}

Result<std::unique_ptr<Model>> Model::RandomOnGpu(ModelConfig config, uint64_t seed) {
  KVCOMM_ASSIGN_OR_RETURN(auto engine, internal::MakeCudaEngine(config, nullptr, seed));
  Hasher128 h;
  const Hash128 hash = h.AddString("random-gpu").AddU64(seed).Finish();
  return std::unique_ptr<Model>(new Model(std::move(config), hash, std::move(engine)));
}

Status Model::CheckRuns(std::span<const TokenRun> runs, const KvCache& cache) const {
  if (cache.device() != device())
    return InvalidArgument("the cache lives on another device than the model");
  int64_t next = cache.length();
  for (size_t r = 0; r < runs.size(); ++r) {
    const int64_t begin = runs[r].position, end = begin + int64_t(runs[r].tokens.size());
    if (begin == end) return InvalidArgument("no tokens to compute at position {}", begin);
    if (r == 0 && begin != next)
      return InvalidArgument("tokens for position {} on, the cache's first free position is {}",
                             begin, next);
    if (begin < next)
      return InvalidArgument("tokens for positions [{}, {}) overlap the ones before them", begin,
                             end);
    for (int64_t p = next; p < begin; ++p)
      if (!cache.IsValid(p))
        return InvalidArgument("position {} between the runs of tokens holds no KV", p);
    if (end > cache.capacity())
      return InvalidArgument("tokens for positions [{}, {}) exceed the cache capacity {}", begin,
                             end, cache.capacity());
    for (int64_t p = begin; p < end; ++p)
      if (cache.IsValid(p))
        return InvalidArgument(
            "tokens for positions [{}, {}) overlap KV already in the cache at {}", begin, end, p);
    for (int32_t id : runs[r].tokens)
      if (id < 0 || id >= config_.vocab_size)
        return InvalidArgument("token id {} is outside the vocabulary of {}", id,
                               config_.vocab_size);
    next = end;
  }
  return Status::Ok();
}

Result<std::vector<float>> Model::ForwardRuns(std::span<const TokenRun> runs,
                                              KvCache& cache) const {
  if (runs.empty()) return InvalidArgument("ForwardRuns needs at least one run");
  KVCOMM_RETURN_IF_ERROR(CheckRuns(runs, cache));
  std::unique_lock<std::mutex> lock(cuda_mu_, std::defer_lock);
  if (device() == Device::kCuda) lock.lock();
  KVCOMM_ASSIGN_OR_RETURN(auto logits, engine_->ForwardRuns(runs, cache));
  for (const auto& run : runs)
    cache.MarkValid(run.position, run.position + static_cast<int64_t>(run.tokens.size()));
  return logits;
}

Result<std::vector<float>> Model::Forward(std::span<const int32_t> tokens, KvCache& cache,
                                          bool all_logits, QueryCapture* capture) const {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t start = cache.length();
  const TokenRun run{tokens, start};
  KVCOMM_RETURN_IF_ERROR(CheckRuns(std::span(&run, 1), cache));
  if (capture) {
    if (capture->tokens < 1 || capture->tokens > n)
      return InvalidArgument("cannot capture the queries of {} tokens out of {}", capture->tokens,
                             n);
    if (device() != Device::kCpu)
      return Error(ErrorCode::kFailedPrecondition, "queries are captured on the CPU backend only");
    capture->queries.assign(
        uint64_t(config_.num_layers) * config_.num_heads * capture->tokens * config_.head_dim, 0.f);
  }
  std::unique_lock<std::mutex> lock(cuda_mu_, std::defer_lock);
  if (device() == Device::kCuda) lock.lock();
  KVCOMM_ASSIGN_OR_RETURN(auto logits, engine_->Forward(tokens, start, cache, all_logits, capture));
  cache.MarkValid(start, start + n);
  return logits;
}

}  // namespace kvcomm::runtime
