// bench/compress_quality: what KV compression costs in answers, on the shipped model and the
// held-out task suite.
//
// Each task's pipeline runs dense; the final agent's prompt is then prefilled once in full (all
// but its last token, capturing every query). For every method and budget that context's KV is
// compressed by kvstore/compress, decoded into a fresh cache (per-head kept rows, or KIVI
// dequantized) and the last prompt token and the reply are computed over it, greedily. Per task
// type, method and budget it reports: accuracy, answers equal to the full cache's, KL(full ||
// compressed) of the first reply token, the relative error of the attention output of the
// context's last 16 queries, the share of KV kept (tokens, or bytes against bf16 for KIVI) and
// the compression time. Budgets a method cannot meet (fewer tokens than it always keeps) are
// counted as refused and left out of the means.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "agents/pipeline/runner.h"
#include "agents/pipeline/task.h"
#include "agents/pipeline/turn.h"
#include "agents/runtime/generate.h"
#include "agents/runtime/model.h"
#include "agents/runtime/tokenizer.h"
#include "bench/model_shapes.h"
#include "kernels/cpu/parallel.h"
#include "kvstore/compress/compress.h"

namespace kvcomm::bench {
namespace {

namespace compress = kvstore::compress;
using pipeline::TurnRequest;
using runtime::KvCache;
using runtime::Model;

constexpr const char* kProgram = "compress_quality";
constexpr int64_t kErrorQueries = 16;  // window queries whose attention output is compared

template <typename T>
T Check(Result<T> r) {
  ExitOnError(kProgram, r.status());
  return std::move(r).value();
}

// Runs turns dense and remembers the last one: the final agent's, whose prompt is compressed.
class RecordingExecutor final : public pipeline::TurnExecutor {
 public:
  explicit RecordingExecutor(pipeline::TurnExecutor& inner) : inner_(inner) {}
  Result<pipeline::TurnResult> Run(const TurnRequest& request) override {
    last_ = request;
    return inner_.Run(request);
  }
  const TurnRequest& last() const { return last_; }

 private:
  pipeline::TurnExecutor& inner_;
  TurnRequest last_;
};

// A context's KV as the cache will see it: rows [layer][K|V][head][token][dim] and which of
// them each head still holds ([layer][head][token]).
struct UsedKv {
  std::vector<float> kv;
  std::vector<uint8_t> kept;
};

UsedKv Decode(const compress::Compressed& c, const KvLayout& layout) {
  const uint64_t half = layout.ElementsPerHalf();
  UsedKv used{std::vector<float>(layout.num_layers * 2 * half, 0.f),
              std::vector<uint8_t>(uint64_t{layout.num_layers} * layout.kv_heads * layout.tokens)};
  if (c.codec != compress::CompressedCodec::kTokenSubset) {  // every token, approximated
    switch (c.codec) {
      case compress::CompressedCodec::kKivi:
        used.kv = Check(compress::DecodeKivi(c.bytes)).kv;
        break;
      case compress::CompressedCodec::kMixed:
        used.kv = Check(compress::DecodeMixed(c.bytes)).kv;
        break;
      case compress::CompressedCodec::kGear:
        used.kv = Check(compress::DecodeGear(c.bytes)).kv;
        break;
      default:
        used.kv = Check(compress::DecodeMiniCache(c.bytes)).kv;
        break;
    }
    std::fill(used.kept.begin(), used.kept.end(), 1);
    return used;
  }
  const auto subset = Check(compress::DecodeTokenSubset(c.bytes));
  const int64_t D = layout.head_dim, T = layout.tokens, H = layout.kv_heads;
  uint64_t row = 0;
  for (uint32_t l = 0; l < layout.num_layers; ++l)
    for (int64_t h = 0; h < H; ++h) {
      const uint32_t count = subset.counts[l * H + h];
      for (uint32_t i = 0; i < count; ++i, ++row) {
        const int32_t t = subset.indices[row];
        used.kept[(l * H + h) * T + t] = 1;
        for (int half_index = 0; half_index < 2; ++half_index)
          std::copy_n((half_index == 0 ? subset.keys : subset.values).data() + row * D, D,
                      used.kv.data() + (l * 2 + half_index) * half + (h * T + t) * D);
      }
    }
  return used;
}

Status Place(const UsedKv& used, const KvLayout& layout, KvCache& cache) {
  const int64_t D = layout.head_dim, T = layout.tokens, H = layout.kv_heads;
  const uint64_t half = layout.ElementsPerHalf();
  std::vector<int32_t> offsets;
  std::vector<float> keys, values;
  for (uint32_t l = 0; l < layout.num_layers; ++l)
    for (int64_t h = 0; h < H; ++h) {
      offsets.clear();
      keys.clear();
      values.clear();
      for (int32_t t = 0; t < T; ++t) {
        if (!used.kept[(l * H + h) * T + t]) continue;
        offsets.push_back(t);
        const float* k = used.kv.data() + (l * 2) * half + (h * T + t) * D;
        keys.insert(keys.end(), k, k + D);
        values.insert(values.end(), k + half, k + half + D);
      }
      KVCOMM_RETURN_IF_ERROR(cache.ImportKept(l, h, 0, T, offsets, keys.data(), values.data()));
    }
  cache.MarkValid(0, T);
  return Status::Ok();
}

// Per (layer, kv head): the mean over its query heads and the context's last kErrorQueries
// queries of ||o_used - o_full|| / ||o_full||, each query attending causally to the tokens the
// kv head holds.
std::vector<double> HeadOutputErrors(const std::vector<float>& full, const UsedKv& used,
                                     const KvLayout& layout, const std::vector<float>& queries,
                                     int64_t q_heads) {
  const int64_t D = layout.head_dim, T = layout.tokens, H = layout.kv_heads;
  const int64_t n = std::min(kErrorQueries, T), group = q_heads / H;
  const uint64_t half = layout.ElementsPerHalf();
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> errors(layout.num_layers * H, 0.0);
  std::vector<double> w(T), o_full(D), o_used(D);
  for (uint32_t l = 0; l < layout.num_layers; ++l)
    for (int64_t qh = 0; qh < q_heads; ++qh)
      for (int64_t i = T - n; i < T; ++i) {
        const float* q = queries.data() + ((l * q_heads + qh) * T + i) * D;
        const int64_t h = qh / group;
        for (int pass = 0; pass < 2; ++pass) {
          const float* kv = (pass == 0 ? full : used.kv).data() + l * 2 * half + h * T * D;
          auto& o = pass == 0 ? o_full : o_used;
          double top = -INFINITY, sum = 0;
          for (int64_t t = 0; t <= i; ++t) {
            const bool held = pass == 0 || used.kept[(l * H + h) * T + t];
            double dot = 0;
            for (int64_t d = 0; d < D && held; ++d) dot += double{q[d]} * kv[t * D + d];
            w[t] = held ? dot * scale : -INFINITY;
            top = std::max(top, w[t]);
          }
          std::fill(o.begin(), o.end(), 0.0);
          for (int64_t t = 0; t <= i; ++t) sum += (w[t] = std::exp(w[t] - top));
          for (int64_t t = 0; t <= i; ++t)
            for (int64_t d = 0; d < D; ++d) o[d] += w[t] / sum * kv[half + t * D + d];
        }
        double diff = 0, norm = 0;
        for (int64_t d = 0; d < D; ++d) {
          diff += (o_used[d] - o_full[d]) * (o_used[d] - o_full[d]);
          norm += o_full[d] * o_full[d];
        }
        errors[l * H + h] += std::sqrt(diff / std::max(norm, 1e-30)) / double(group * n);
      }
  return errors;
}

double AttentionOutputError(const std::vector<float>& full, const UsedKv& used,
                            const KvLayout& layout, const std::vector<float>& queries,
                            int64_t q_heads) {
  const auto errors = HeadOutputErrors(full, used, layout, queries, q_heads);
  return std::accumulate(errors.begin(), errors.end(), 0.0) / double(errors.size());
}

// DuoAttention calibration: how far each kv head's output moves when it keeps only `sinks` +
// `recent` tokens (a streaming head); the heads that move most are retrieval heads.
std::vector<double> StreamingErrors(const std::vector<float>& kv, const KvLayout& layout,
                                    const std::vector<float>& queries, int64_t q_heads,
                                    int64_t sinks, int64_t recent) {
  UsedKv streaming{
      kv, std::vector<uint8_t>(uint64_t{layout.num_layers} * layout.kv_heads * layout.tokens, 0)};
  for (uint64_t row = 0; row < uint64_t{layout.num_layers} * layout.kv_heads; ++row)
    for (int64_t t = 0; t < layout.tokens; ++t)
      streaming.kept[row * layout.tokens + t] = t < sinks || t >= layout.tokens - recent;
  return HeadOutputErrors(kv, streaming, layout, queries, q_heads);
}

struct Cell {  // one (type, method, budget)
  int tasks = 0, refused = 0, correct = 0, same = 0;
  double kl = 0, attention_error = 0, kept = 0, seconds = 0;
  std::string refusal;
};

struct Reply {
  std::string text;
  std::vector<float> logits;  // of the first reply token
};

Reply Answer(const Model& model, const runtime::Tokenizer& tokenizer, const TurnRequest& request,
             int32_t last_token, KvCache& cache, runtime::MorphKvOptions morph = {}) {
  runtime::GenerateOptions options;
  options.morph = morph;
  options.max_new_tokens = request.max_reply_tokens;
  options.sampling = request.sampling;
  options.stop_strings = {"\n"};
  options.stop_tokens = model.config().eos_token_ids;
  if (options.stop_tokens.empty() && tokenizer.eos_id() >= 0)
    options.stop_tokens.push_back(tokenizer.eos_id());
  options.keep_prompt_logits = true;
  const int32_t prompt[] = {last_token};
  auto result = Check(runtime::Generate(model, &tokenizer, prompt, cache, options));
  return {result.text, std::move(result.prompt_logits)};
}

// LAQ's draft: kDraftTokens decoded greedily from the last prompt token over the context
// compressed by `cheap` (StreamingLLM at the same budget here), with their queries.
constexpr int64_t kDraftTokens = 8;
constexpr int64_t kMorphRecent = 16;  // MorphKV's recent window in this benchmark

Result<std::vector<float>> DraftOver(const Model& model, const compress::CompressRequest& cheap,
                                     const KvLayout& layout, int64_t capacity, int32_t last) {
  KVCOMM_ASSIGN_OR_RETURN(auto compressed, compress::Compress(cheap));
  KVCOMM_ASSIGN_OR_RETURN(auto cache, model.NewCache(capacity + kDraftTokens));
  KVCOMM_RETURN_IF_ERROR(Place(Decode(compressed, layout), layout, cache));
  return runtime::DraftQueries(model, cache, last, kDraftTokens);
}

bool Correct(const pipeline::Task& task, const std::string& reply) {
  return task.scored && pipeline::NormalizeAnswer(reply) == pipeline::NormalizeAnswer(task.answer);
}

}  // namespace
}  // namespace kvcomm::bench

int main(int argc, char** argv) {
  using namespace kvcomm;
  using namespace kvcomm::bench;
  CLI::App app{"Accuracy, KL and attention error of every KV compression method on the task suite"};
  std::string model_dir = "models/kvcomm-tiny", tasks_dir = "bench/tasks", json_path;
  std::vector<std::string> types = {"rag", "long_context"};
  std::vector<std::string> budgets = {"10%", "25%", "50%"};
  std::vector<std::string> methods = {"streaming_llm",  "key_norm",    "snapkv",
                                      "snapkv@pyramid", "snapkv@cake", "snapkv@uniform:heads=ada",
                                      "tova",           "h2o",         "d2o@d2o",
                                      "leverage",       "curdkv",      "obcache",
                                      "compactor",      "kvcrush",     "duo",
                                      "lava@lava",      "laq",         "morphkv",
                                      "mikv",           "kivi:bits=4", "kivi:bits=2",
                                      "gear",           "gear:bits=2", "minicache"};
  int64_t limit = 20;
  app.add_option("--model", model_dir, "model directory")->check(CLI::ExistingDirectory);
  app.add_option("--tasks-dir", tasks_dir, "task suite directory")->check(CLI::ExistingDirectory);
  app.add_option("--types", types, "task types (files TYPE.jsonl)");
  app.add_option("--limit", limit, "tasks per type")->check(CLI::Range(1, 100000));
  app.add_option("--budgets", budgets, "token-selection budgets");
  app.add_option("--methods", methods,
                 "METHOD[@ALLOCATOR]; quantization methods (kivi) run once, without a budget");
  app.add_option("--json", json_path, "also write the table as JSON");
  std::string duo_heads_path = "models/kvcomm-tiny/duo_heads.json", calibrate_path;
  app.add_option("--duo-heads", duo_heads_path, "head scores for method duo (if the file exists)");
  app.add_option("--calibrate-duo", calibrate_path,
                 "instead of the table: measure each kv head's streaming error (4 sinks + "
                 "--calibrate-recent tokens) on the tasks and write the head scores to this file");
  int64_t calibrate_recent = 16;
  app.add_option("--calibrate-recent", calibrate_recent,
                 "the recent window of the calibration's streaming heads (short prompts need a "
                 "short one)")
      ->check(CLI::Range(1, 100000));
  CLI11_PARSE(app, argc, argv);

  auto model = Check(Model::Load(model_dir));
  auto tokenizer = Check(
      runtime::Tokenizer::Load((std::filesystem::path(model_dir) / "tokenizer.model").string()));
  const auto& config = model->config();
  const int32_t bos = config.bos_token_id >= 0 ? config.bos_token_id : tokenizer->bos_id();
  const auto inv_freq = config.RopeInverseFrequencies();
  auto templates = Check(
      pipeline::LoadTemplates((std::filesystem::path(tasks_dir) / "templates.toml").string()));
  pipeline::LocalExecutor dense(*model, *tokenizer);
  RecordingExecutor recorder(dense);
  pipeline::AgentSettings defaults;
  defaults.executor = &recorder;
  pipeline::PipelineRunner runner(templates, defaults);

  std::vector<float> head_scores;
  if (calibrate_path.empty() && std::filesystem::exists(duo_heads_path)) {
    auto file = nlohmann::json::parse(std::ifstream(duo_heads_path), nullptr, false);
    if (file.is_discarded() || !file.contains("scores") || !file["scores"].is_array() ||
        file["scores"].size() != uint64_t(config.num_layers) * config.num_kv_heads) {
      std::fprintf(stderr, "%s: %s is not a head-score file for this model\n", kProgram,
                   duo_heads_path.c_str());
      return 1;
    }
    for (const auto& v : file["scores"]) head_scores.push_back(v.get<float>());
  }
  std::vector<double> streaming_errors(uint64_t(config.num_layers) * config.num_kv_heads, 0.0);
  int calibration_tasks = 0;

  // Rows in order: (type, method spec, budget) -> cell; plus the full cache per type.
  std::map<std::tuple<std::string, std::string, std::string>, Cell> cells;
  std::vector<std::tuple<std::string, std::string, std::string>> order;
  std::map<std::string, Cell> full_cells;
  using Clock = std::chrono::steady_clock;
  const auto started = Clock::now();
  for (const auto& type : types) {
    auto tasks = Check(pipeline::LoadTasks(
        (std::filesystem::path(tasks_dir) / (type + ".jsonl")).string(), templates, limit));
    for (const auto& task : tasks) {
      const auto dense_result = Check(runner.Run(task));
      const TurnRequest& request = recorder.last();
      auto prompt = Check(pipeline::TokenizePrompt(*tokenizer, bos, request.segments));
      const int64_t context = static_cast<int64_t>(prompt.tokens.size()) - 1;
      const int64_t capacity = context + 1 + request.max_reply_tokens;
      KvCache cache = Check(model->NewCache(capacity));
      runtime::QueryCapture captured{context, {}};
      Check(model->Forward(std::span(prompt.tokens).first(context), cache, false, &captured));
      const KvLayout layout = cache.SegmentLayout(context, DType::kF32);  // what the cache holds
      auto exported = Check(cache.Export(0, context, DType::kF32));
      const auto* kv_data = reinterpret_cast<const float*>(exported.span().data());
      const std::vector<float> kv(kv_data,
                                  kv_data + layout.num_layers * 2 * layout.ElementsPerHalf());
      if (!calibrate_path.empty()) {
        const auto errors =
            StreamingErrors(kv, layout, captured.queries, config.num_heads, 4, calibrate_recent);
        for (size_t i = 0; i < errors.size(); ++i) streaming_errors[i] += errors[i];
        ++calibration_tasks;
        continue;
      }
      const Reply full = Answer(*model, *tokenizer, request, prompt.tokens.back(), cache);
      Cell& f = full_cells[type];
      ++f.tasks;
      f.correct += Correct(task, full.text);
      f.same += pipeline::NormalizeAnswer(full.text) ==
                pipeline::NormalizeAnswer(dense_result.final_reply);

      for (const auto& entry : methods) {
        const size_t at = entry.find('@');
        const std::string method = entry.substr(0, at);
        const std::string allocator = at == std::string::npos ? "uniform" : entry.substr(at + 1);
        const bool quantizes = method.starts_with("kivi") || method.starts_with("gear") ||
                               method.starts_with("minicache");
        for (const auto& budget : quantizes ? std::vector<std::string>{"-"} : budgets) {
          const auto key = std::make_tuple(type, entry, budget);
          if (!cells.contains(key)) order.push_back(key);
          Cell& cell = cells[key];
          ++cell.tasks;
          if (method == "morphkv") {  // decode-time: the full context, trimmed as it decodes
            auto fraction = compress::ParseBudget(budget);
            if (!fraction.ok() || fraction->kind != compress::Budget::Kind::kFraction) {
              ++cell.refused;
              cell.refusal = "morphkv takes fraction budgets here";
              continue;
            }
            const runtime::MorphKvOptions morph{
                std::max<int64_t>(kMorphRecent + 1, std::llround(fraction->value * context)),
                kMorphRecent};
            KvCache decoding = Check(model->NewCache(capacity));
            ExitOnError(kProgram, decoding.Import(layout, exported.span(), 0));
            const Reply reply =
                Answer(*model, *tokenizer, request, prompt.tokens.back(), decoding, morph);
            cell.correct += Correct(task, reply.text);
            cell.same +=
                pipeline::NormalizeAnswer(reply.text) == pipeline::NormalizeAnswer(full.text);
            cell.kept += double(morph.capacity) / double(context);
            continue;  // KL and attention error: the first token sees the whole prompt
          }
          compress::CompressRequest r;
          r.layout = layout;
          r.layout.dtype = DType::kBF16;  // kept rows stored as the daemon stores KV
          r.kv = kv;
          r.queries = captured.queries;
          r.q_heads = config.num_heads;
          r.window = context;
          r.inv_freq = inv_freq;
          r.head_scores = head_scores;
          r.method = method;
          r.budget = quantizes ? "" : budget;
          r.allocator = allocator;
          std::vector<float> draft;
          if (method.starts_with("laq")) {  // look-ahead queries of a draft reply
            auto cheap = r;
            cheap.method = "streaming_llm";
            auto drafted = DraftOver(*model, cheap, layout, capacity, prompt.tokens.back());
            if (!drafted.ok()) {
              ++cell.refused;
              cell.refusal = drafted.status().message();
              continue;
            }
            draft = std::move(*drafted);
            r.queries = draft;
            r.window = kDraftTokens;
            r.queries_follow = true;
          }
          const auto t0 = Clock::now();
          auto compressed = compress::Compress(r);
          const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
          if (!compressed.ok()) {
            ++cell.refused;
            cell.refusal = compressed.status().message();
            continue;
          }
          const UsedKv used = Decode(*compressed, layout);
          KvCache reduced = Check(model->NewCache(capacity));
          ExitOnError(kProgram, Place(used, layout, reduced));
          const Reply reply = Answer(*model, *tokenizer, request, prompt.tokens.back(), reduced);
          cell.correct += Correct(task, reply.text);
          cell.same +=
              pipeline::NormalizeAnswer(reply.text) == pipeline::NormalizeAnswer(full.text);
          cell.kl += pipeline::KlDivergence(full.logits, reply.logits);
          cell.attention_error +=
              AttentionOutputError(kv, used, layout, captured.queries, config.num_heads);
          cell.kept += compressed->codec == compress::CompressedCodec::kTokenSubset
                           ? double(std::count(used.kept.begin(), used.kept.end(), 1)) /
                                 double(used.kept.size())
                           : double(compressed->bytes.size()) /
                                 double(layout.num_layers * 2 * layout.ElementsPerHalf() * 2);
          cell.seconds += seconds;
        }
      }
    }
    std::fprintf(stderr, "%s: %s done (%.0f s)\n", kProgram, type.c_str(),
                 std::chrono::duration<double>(Clock::now() - started).count());
  }

  if (!calibrate_path.empty()) {
    nlohmann::json out = {
        {"model", model_dir},
        {"layers", config.num_layers},
        {"kv_heads", config.num_kv_heads},
        {"measure", fmt::format("mean relative attention-output error of the context's last 16 "
                                "queries when the kv head keeps only 4 sink + {} recent tokens",
                                calibrate_recent)},
        {"types", types},
        {"tasks", calibration_tasks}};
    for (double& e : streaming_errors) e /= std::max(1, calibration_tasks);
    out["scores"] = streaming_errors;
    std::ofstream(calibrate_path) << out.dump(1) << "\n";
    std::printf("%s: head scores of %d tasks written to %s\n", kProgram, calibration_tasks,
                calibrate_path.c_str());
    return 0;
  }
  std::printf(
      "compress_quality: %s, %d threads; per task type the final agent's context (all but the "
      "last prompt token) compressed, then the reply computed over it (greedy). KL: first reply "
      "token, full || compressed. attn err: relative error of the attention output of the "
      "context's last %lld queries. kept: KV tokens kept (KIVI, MiKV, GEAR, MiniCache: bytes vs "
      "bf16).\n\n",
      model_dir.c_str(), kernels::cpu::ParallelThreads(), static_cast<long long>(kErrorQueries));
  std::printf(
      "| type | method | budget | tasks | refused | accuracy | same as full | KL | attn err | kept "
      "| compress ms |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& type : types) {
    const Cell& f = full_cells[type];
    std::printf(
        "| %s | full cache | - | %d | 0 | %.1f%% | (dense pipeline: %d/%d) | 0 | 0 | 100%% | - |\n",
        type.c_str(), f.tasks, 100.0 * f.correct / std::max(1, f.tasks), f.same, f.tasks);
    rows.push_back({{"type", type},
                    {"method", "full"},
                    {"tasks", f.tasks},
                    {"accuracy", double(f.correct) / std::max(1, f.tasks)}});
    for (const auto& key : order) {
      if (std::get<0>(key) != type) continue;
      const Cell& c = cells[key];
      const int n = c.tasks - c.refused;
      if (n == 0) {
        std::printf("| %s | %s | %s | %d | %d | refused: %s | | | | | |\n", type.c_str(),
                    std::get<1>(key).c_str(), std::get<2>(key).c_str(), c.tasks, c.refused,
                    c.refusal.c_str());
        continue;
      }
      if (std::get<1>(key) == "morphkv") {  // decode-time: nothing before the first token
        std::printf("| %s | morphkv | %s | %d | %d | %.1f%% | %.1f%% | - | - | %.1f%% | - |\n",
                    type.c_str(), std::get<2>(key).c_str(), c.tasks, c.refused,
                    100.0 * c.correct / n, 100.0 * c.same / n, 100.0 * c.kept / n);
      } else {
        std::printf("| %s | %s | %s | %d | %d | %.1f%% | %.1f%% | %.4f | %.3f | %.1f%% | %.1f |\n",
                    type.c_str(), std::get<1>(key).c_str(), std::get<2>(key).c_str(), c.tasks,
                    c.refused, 100.0 * c.correct / n, 100.0 * c.same / n, c.kl / n,
                    c.attention_error / n, 100.0 * c.kept / n, 1000.0 * c.seconds / n);
      }
      rows.push_back({{"type", type},
                      {"method", std::get<1>(key)},
                      {"budget", std::get<2>(key)},
                      {"tasks", c.tasks},
                      {"refused", c.refused},
                      {"accuracy", double(c.correct) / n},
                      {"same_as_full", double(c.same) / n},
                      {"kl", c.kl / n},
                      {"attention_error", c.attention_error / n},
                      {"kept", c.kept / n},
                      {"compress_ms", 1000.0 * c.seconds / n}});
    }
  }
  if (!json_path.empty()) std::ofstream(json_path) << rows.dump(1) << "\n";
  return 0;
}
