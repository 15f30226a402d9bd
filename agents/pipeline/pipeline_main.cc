// kvcomm-pipeline: runs multi-agent tasks (bench/tasks format) on a model and scores them.
//   kvcomm-pipeline --model DIR --tasks FILE [--tasks FILE ...] [--templates FILE] [--limit N]
//                   [--device cpu|cuda] [--mode dense|prefix|naive|kvcomm] [--endpoint E]
//                   [--namespace NS] [--fidelity] [--json OUT]
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "agents/pipeline/runner.h"

using namespace kvcomm;
using namespace kvcomm::pipeline;

namespace {

int Fail(const Status& s) {
  std::fprintf(stderr, "kvcomm-pipeline: %s\n", s.ToString().c_str());
  return 1;
}

struct TypeTotals {
  int64_t tasks = 0, correct = 0, turns = 0, prompt_tokens = 0, reused_tokens = 0, fallbacks = 0;
  int64_t placeholder_tokens = 0, reused_placeholder_tokens = 0, realigned_tokens = 0;
  int64_t anchor_turns = 0;
  double prefill_seconds = 0, seconds = 0;
  int64_t measured = 0;  // turns with fidelity numbers
  double kl = 0, kv_error = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvcomm-pipeline: run multi-agent tasks on a model and score the answers"};
  std::string model_dir, templates_path, device = "cpu", json_path, mode_name = "dense";
  client::ClientOptions daemon_options;
  daemon_options.client_name = "kvcomm-pipeline";
  std::vector<std::string> task_files;
  int64_t limit = 0;
  RunOptions options;
  app.add_option("--model", model_dir,
                 "model directory (config.json, *.safetensors, tokenizer.model)")
      ->required();
  app.add_option("--tasks", task_files, "task file (JSON lines); repeatable")->required();
  app.add_option("--templates", templates_path,
                 "prompt templates (default: templates.toml beside the first task file)");
  app.add_option("--limit", limit, "first N tasks of each file (0 = all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--max-reply-tokens", options.max_reply_tokens, "tokens per reply at most")
      ->check(CLI::Range(1, 4096));
  app.add_option("--mode", mode_name,
                 "dense (full prefill), prefix (exact prefix reuse via kvcommd), naive (also "
                 "placeholders, positionally realigned) or kvcomm (placeholders realigned with "
                 "anchors by kvcommd)")
      ->check(CLI::IsMember({"dense", "prefix", "naive", "kvcomm"}));
  app.add_option("--endpoint", daemon_options.endpoint,
                 "kvcommd endpoint (default: the usual one)");
  app.add_option("--namespace", daemon_options.name_space, "kvcommd namespace")
      ->default_val("kvcomm-pipeline");
  app.add_flag("--fidelity", options.measure_fidelity,
               "reuse modes: also prefill every turn in full and report next-token KL and K/V "
               "error of the reused KV");
  app.add_option("--json", json_path, "write every task's replies and the totals here");
  CLI11_PARSE(app, argc, argv);
  options.mode = *ParseMode(mode_name);  // CLI11 already checked the name
  if (templates_path.empty())
    templates_path =
        (std::filesystem::path(task_files[0]).parent_path() / "templates.toml").string();

  auto templates = LoadTemplates(templates_path);
  if (!templates.ok()) return Fail(templates.status());
  auto model = runtime::Model::Load(
      model_dir, device == "cuda" ? runtime::Device::kCuda : runtime::Device::kCpu);
  if (!model.ok()) return Fail(model.status());
  auto tokenizer =
      runtime::Tokenizer::Load((std::filesystem::path(model_dir) / "tokenizer.model").string());
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  std::unique_ptr<client::Client> daemon;
  if (options.mode != Mode::kDense) {
    daemon_options.model = (*model)->fingerprint();
    auto connected = client::Client::Connect(daemon_options);
    if (!connected.ok()) return Fail(connected.status());
    daemon = std::move(*connected);
  }
  PipelineRunner runner(**model, **tokenizer, *templates, options, daemon.get());

  std::map<std::string, TypeTotals> totals;
  nlohmann::json results = nlohmann::json::array();
  for (const auto& file : task_files) {
    auto tasks = LoadTasks(file, *templates, limit);
    if (!tasks.ok()) return Fail(tasks.status());
    for (const Task& task : *tasks) {
      auto run = runner.Run(task);
      if (!run.ok()) return Fail(run.status());
      TypeTotals& t = totals[task.type];
      t.tasks += 1;
      t.correct += run->correct;
      nlohmann::json replies = nlohmann::json::array(), turns = nlohmann::json::array();
      for (const auto& turn : run->turns) {
        t.turns += 1;
        t.prompt_tokens += turn.prompt_tokens;
        t.reused_tokens += turn.reused_tokens;
        t.placeholder_tokens += turn.placeholder_tokens;
        t.reused_placeholder_tokens += turn.reused_placeholder_tokens;
        t.realigned_tokens += turn.realigned_tokens;
        t.anchor_turns += turn.made_anchors;
        t.fallbacks += turn.fallback;
        t.prefill_seconds += turn.prefill_seconds;
        t.seconds += turn.seconds;
        replies.push_back(turn.reply);
        turns.push_back({{"agent", turn.agent},
                         {"prompt_tokens", turn.prompt_tokens},
                         {"reused_tokens", turn.reused_tokens},
                         {"realigned_tokens", turn.realigned_tokens},
                         {"made_anchors", turn.made_anchors},
                         {"next_token_kl", turn.next_token_kl},
                         {"kv_relative_error", turn.kv_relative_error},
                         {"ttft_ms", 1e3 * turn.prefill_seconds}});
        if (turn.next_token_kl >= 0) {
          t.measured += 1;
          t.kl += turn.next_token_kl;
          t.kv_error += turn.kv_relative_error;
        }
        if (turn.fallback || turn.store_failed)
          std::fprintf(stderr, "kvcomm-pipeline: %s: %s: %s\n", task.id.c_str(),
                       turn.fallback ? "ran dense" : "KV not stored", turn.daemon_error.c_str());
      }
      results.push_back({{"id", task.id},
                         {"type", task.type},
                         {"replies", replies},
                         {"turns", turns},
                         {"answer", task.answer},
                         {"correct", run->correct}});
    }
  }

  std::printf("mode %s on %s\n", mode_name.c_str(), device.c_str());
  std::printf("%-14s %6s %9s %6s %11s %8s %9s %10s %8s %10s %12s\n", "type", "tasks", "accuracy",
              "turns", "prompt tok", "reused", "realigned", "ph reused", "anchor t", "fallbacks",
              "TTFT/turn");
  nlohmann::json summary = nlohmann::json::object();
  for (const auto& [type, t] : totals) {
    const double accuracy = static_cast<double>(t.correct) / t.tasks;
    const double reuse = static_cast<double>(t.reused_tokens) / t.prompt_tokens;
    const double realigned = static_cast<double>(t.realigned_tokens) / t.prompt_tokens;
    const double placeholder_reuse =
        t.placeholder_tokens
            ? static_cast<double>(t.reused_placeholder_tokens) / t.placeholder_tokens
            : 0.0;
    std::printf("%-14s %6lld %8.1f%% %6lld %11.0f %7.1f%% %8.1f%% %9.1f%% %8lld %10lld %9.1f ms\n",
                type.c_str(), static_cast<long long>(t.tasks), 100 * accuracy,
                static_cast<long long>(t.turns), static_cast<double>(t.prompt_tokens) / t.turns,
                100 * reuse, 100 * realigned, 100 * placeholder_reuse,
                static_cast<long long>(t.anchor_turns), static_cast<long long>(t.fallbacks),
                1e3 * t.prefill_seconds / t.turns);
    if (t.measured > 0) {
      std::printf(
          "%14s fidelity over %lld reusing turns: next-token KL %.4f nats, K/V relative "
          "error %.4f\n",
          "", static_cast<long long>(t.measured), t.kl / t.measured, t.kv_error / t.measured);
    }
    summary[type] = {{"tasks", t.tasks},
                     {"correct", t.correct},
                     {"accuracy", accuracy},
                     {"turns", t.turns},
                     {"mean_prompt_tokens", static_cast<double>(t.prompt_tokens) / t.turns},
                     {"reuse_rate", reuse},
                     {"realigned_rate", realigned},
                     {"placeholder_reuse_rate", placeholder_reuse},
                     {"anchor_turns", t.anchor_turns},
                     {"fidelity_turns", t.measured},
                     {"mean_next_token_kl", t.measured ? t.kl / t.measured : 0.0},
                     {"mean_kv_relative_error", t.measured ? t.kv_error / t.measured : 0.0},
                     {"fallbacks", t.fallbacks},
                     {"mean_ttft_ms", 1e3 * t.prefill_seconds / t.turns}};
  }
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << nlohmann::json{{"model", model_dir},
                          {"device", device},
                          {"mode", mode_name},
                          {"summary", summary},
                          {"tasks", results}}
               .dump(1)
        << "\n";
    if (!out) return Fail(Error(ErrorCode::kInternal, "cannot write '{}'", json_path));
  }
  return 0;
}
