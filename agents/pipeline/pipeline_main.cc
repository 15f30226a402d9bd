// kvcomm-pipeline: runs multi-agent pipelines on models and scores them, in one or more modes.
//   kvcomm-pipeline --pipeline FILE [--mode M ...] [--limit N] [--device cpu|cuda]
//                   [--worker ENDPOINT ...] [--endpoint E] [--namespace NS] [--fidelity] [--json F]
//   kvcomm-pipeline --model DIR --tasks FILE [--tasks FILE ...] [--templates FILE] ...
// The first form reads a pipeline file (pipeline_spec.h, examples/); the second runs task files
// with each task's own agents and topology. With several modes, each runs in its own kvcommd
// namespace (NS-MODE) and a comparison with the first mode follows the tables.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agents/pipeline/pipeline_spec.h"
#include "agents/pipeline/remote_executor.h"
#include "agents/pipeline/report.h"

using namespace kvcomm;
using namespace kvcomm::pipeline;

namespace {

int Fail(const Status& s) {
  std::fprintf(stderr, "kvcomm-pipeline: %s\n", s.ToString().c_str());
  return 1;
}

struct LoadedModel {
  std::unique_ptr<runtime::Model> model;
  std::unique_ptr<runtime::Tokenizer> tokenizer;
};

Result<LoadedModel> LoadModel(const std::string& dir, runtime::Device device) {
  LoadedModel loaded;
  KVCOMM_ASSIGN_OR_RETURN(loaded.model, runtime::Model::Load(dir, device));
  KVCOMM_ASSIGN_OR_RETURN(
      loaded.tokenizer,
      runtime::Tokenizer::Load((std::filesystem::path(dir) / "tokenizer.model").string()));
  return loaded;
}

// The executors of one mode's run: one per in-process model (with its own kvcommd session) and
// one per worker endpoint.
struct ModeExecutors {
  std::vector<std::unique_ptr<client::Client>> daemons;
  std::map<std::string, std::unique_ptr<TurnExecutor>> by_model, by_worker;
};

nlohmann::json TotalsJson(const Totals& t) {
  return {{"tasks", t.tasks},
          {"scored", t.scored},
          {"correct", t.correct},
          {"accuracy", t.accuracy()},
          {"turns", t.turns},
          {"mean_prompt_tokens", t.turns ? static_cast<double>(t.prompt_tokens) / t.turns : 0.0},
          {"reuse_rate", t.reuse_rate()},
          {"realigned_rate", t.realigned_rate()},
          {"placeholder_reuse_rate", t.placeholder_reuse_rate()},
          {"anchor_turns", t.anchor_turns},
          {"fidelity_turns", t.measured},
          {"mean_next_token_kl", t.mean_kl()},
          {"mean_kv_relative_error", t.mean_kv_error()},
          {"fallbacks", t.fallbacks},
          {"checked_turns", t.checked_turns},
          {"checks_changed", t.checks_changed},
          {"mean_ttft_ms", t.mean_ttft_ms()}};
}

nlohmann::json ReportJson(const RunReport& report) {
  nlohmann::json summary = nlohmann::json::object(), agents = nlohmann::json::object();
  for (const auto& [type, t] : report.by_type) summary[type] = TotalsJson(t);
  for (const auto& [id, t] : report.by_agent) agents[id] = TotalsJson(t);
  nlohmann::json tasks = nlohmann::json::array();
  for (const TaskResult& task : report.tasks) {
    nlohmann::json replies = nlohmann::json::array(), turns = nlohmann::json::array();
    for (const auto& turn : task.turns) {
      replies.push_back(turn.reply);
      turns.push_back({{"agent", task.agent_ids[turn.agent]},
                       {"prompt_tokens", turn.prompt_tokens},
                       {"reused_tokens", turn.reused_tokens},
                       {"realigned_tokens", turn.realigned_tokens},
                       {"made_anchors", turn.made_anchors},
                       {"recomputed_tokens", turn.recomputed_tokens},
                       {"checked", turn.checked},
                       {"check_changed", turn.check_changed},
                       {"next_token_kl", turn.next_token_kl},
                       {"kv_relative_error", turn.kv_relative_error},
                       {"ttft_ms", 1e3 * turn.prefill_seconds}});
    }
    tasks.push_back({{"id", task.task_id},
                     {"type", task.type},
                     {"replies", replies},
                     {"turns", turns},
                     {"correct", task.correct}});
  }
  return {{"mode", report.mode},
          {"summary", summary},
          {"agents", agents},
          {"all", TotalsJson(report.all)},
          {"tasks", tasks}};
}

std::string Accuracy(const Totals& t) {
  return t.scored ? fmt::format("{:.1f}%", 100 * t.accuracy()) : std::string("-");
}

void PrintReport(const RunReport& r, const std::string& device) {
  std::printf("mode %s on %s\n", r.mode.c_str(), device.c_str());
  std::printf("%-14s %6s %9s %6s %11s %8s %9s %10s %8s %10s %12s\n", "type", "tasks", "accuracy",
              "turns", "prompt tok", "reused", "realigned", "ph reused", "anchor t", "fallbacks",
              "TTFT/turn");
  for (const auto& [type, t] : r.by_type) {
    std::printf("%-14s %6lld %9s %6lld %11.0f %7.1f%% %8.1f%% %9.1f%% %8lld %10lld %9.1f ms\n",
                type.c_str(), static_cast<long long>(t.tasks), Accuracy(t).c_str(),
                static_cast<long long>(t.turns), static_cast<double>(t.prompt_tokens) / t.turns,
                100 * t.reuse_rate(), 100 * t.realigned_rate(), 100 * t.placeholder_reuse_rate(),
                static_cast<long long>(t.anchor_turns), static_cast<long long>(t.fallbacks),
                t.mean_ttft_ms());
    if (t.checked_turns > 0)
      std::printf("%14s %lld turns computed in full too, as kvcommd asked: %lld replies changed\n",
                  "", static_cast<long long>(t.checked_turns),
                  static_cast<long long>(t.checks_changed));
    if (t.measured > 0)
      std::printf(
          "%14s fidelity over %lld reusing turns: next-token KL %.4f nats, K/V relative "
          "error %.4f\n",
          "", static_cast<long long>(t.measured), t.mean_kl(), t.mean_kv_error());
  }
}

// The first mode is the reference: accuracy, reuse, TTFT and speedup of every mode, per agent,
// and how many final answers match the reference's.
void PrintComparison(const std::vector<RunReport>& reports) {
  const RunReport& ref = reports.front();
  std::printf("\n%-8s %9s %7s %9s %11s %8s %13s\n", "mode", "accuracy", "reuse", "ph reuse",
              "TTFT/turn", "speedup", "same answer");
  for (const RunReport& r : reports) {
    int64_t same = 0;
    for (size_t i = 0; i < r.tasks.size() && i < ref.tasks.size(); ++i)
      same += r.tasks[i].final_reply == ref.tasks[i].final_reply;
    const double speedup =
        r.all.mean_ttft_ms() > 0 ? ref.all.mean_ttft_ms() / r.all.mean_ttft_ms() : 0.0;
    std::printf("%-8s %9s %6.1f%% %8.1f%% %8.1f ms %7.2fx %8lld/%-4zu\n", r.mode.c_str(),
                Accuracy(r.all).c_str(), 100 * r.all.reuse_rate(),
                100 * r.all.placeholder_reuse_rate(), r.all.mean_ttft_ms(), speedup,
                static_cast<long long>(same), r.tasks.size());
  }
  std::printf("\nmean TTFT per agent (ms)\n%-20s", "agent");
  for (const RunReport& r : reports) std::printf(" %9s", r.mode.c_str());
  for (size_t m = 1; m < reports.size(); ++m) std::printf(" %9s", (reports[m].mode + " x").c_str());
  std::printf("\n");
  for (const auto& [id, t] : ref.by_agent) {
    std::printf("%-20s", id.c_str());
    std::vector<double> ttft;
    for (const RunReport& r : reports) {
      auto it = std::find_if(r.by_agent.begin(), r.by_agent.end(),
                             [&](const auto& e) { return e.first == id; });
      ttft.push_back(it == r.by_agent.end() ? 0.0 : it->second.mean_ttft_ms());
      std::printf(" %9.1f", ttft.back());
    }
    for (size_t m = 1; m < ttft.size(); ++m)
      std::printf(" %8.2fx", ttft[m] > 0 ? ttft[0] / ttft[m] : 0.0);
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvcomm-pipeline: run multi-agent pipelines on models and score the answers"};
  std::string pipeline_path, model_dir, templates_path, device = "cpu", json_path;
  std::vector<std::string> task_files, mode_names, workers;
  std::string name_space = "kvcomm-pipeline", endpoint;
  int64_t limit = -1, worker_timeout_s = 300, max_reply_tokens = 24;
  bool fidelity = false;
  auto* pipeline_opt =
      app.add_option("--pipeline", pipeline_path, "pipeline file (TOML)")->check(CLI::ExistingFile);
  auto* model_opt = app.add_option("--model", model_dir,
                                   "model directory (config.json, *.safetensors, tokenizer.model)")
                        ->excludes(pipeline_opt);
  app.add_option("--tasks", task_files, "task file (JSON lines); repeatable")
      ->excludes(pipeline_opt)
      ->needs(model_opt);
  app.add_option("--templates", templates_path,
                 "prompt templates (default: templates.toml beside the first task file)")
      ->excludes(pipeline_opt);
  app.add_option("--max-reply-tokens", max_reply_tokens, "tokens per reply at most (--tasks)")
      ->check(CLI::Range(1, 4096))
      ->excludes(pipeline_opt);
  app.add_option("--limit", limit, "first N tasks of each file (0 = all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--device", device, "cpu or cuda, for models run in this process")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  std::string kv_delivery = "frames";
  app.add_option("--kv-delivery", kv_delivery,
                 "how kvcomm plans bring KV to models run here: frames or device (in place from "
                 "kvcommd's GPU through CUDA IPC; needs --device cuda and kvcommd with ipc.arena)")
      ->check(CLI::IsMember({"frames", "device"}));
  app.add_option("--mode", mode_names,
                 "dense (full prefill), prefix (exact prefix reuse via kvcommd), naive (also "
                 "placeholders, positionally realigned) or kvcomm (placeholders realigned with "
                 "anchors by kvcommd); repeat to compare modes on the same tasks")
      ->check(CLI::IsMember({"dense", "prefix", "naive", "kvcomm"}));
  app.add_option("--endpoint", endpoint, "kvcommd endpoint (default: the usual one)");
  app.add_option("--namespace", name_space, "kvcommd namespace");
  app.add_option("--worker", workers,
                 "run the agents on these kvcomm-agent workers (endpoints; repeatable), "
                 "spread over them in order, instead of where the pipeline file says");
  app.add_option("--worker-timeout", worker_timeout_s, "seconds a kvcomm-agent may take per turn")
      ->check(CLI::Range(1, 86400));
  app.add_flag("--fidelity", fidelity,
               "reuse modes: also prefill every turn in full and report next-token KL and K/V "
               "error of the reused KV");
  bool bases_after_reply = false;
  app.add_flag("--bases-after-reply", bases_after_reply,
               "kvcomm: the first agent to read new content computes it in its prompt and "
               "stores its base after its reply (its TTFT pays no extra pass; the next reader "
               "makes the anchor); also set by a pipeline file's bases_after_reply = true");
  bool true_context_anchors = false;
  app.add_flag("--true-context-anchors", true_context_anchors,
               "kvcomm: a turn that makes anchors computes every realigned span before what it "
               "reports again, in its true context (KVCOMM's way; by default it reports the KV it "
               "computed over the realigned spans); also set by a pipeline file's "
               "true_context_anchors = true");
  app.add_option("--json", json_path, "write every task's replies and the totals here");
  CLI11_PARSE(app, argc, argv);
  if (pipeline_path.empty() && (model_dir.empty() || task_files.empty()))
    return Fail(InvalidArgument("give --pipeline FILE, or --model DIR and --tasks FILE"));
  if (mode_names.empty()) mode_names = {"dense"};

  // What to run: a pipeline file, or task files with their own agents.
  PipelineSpec spec;
  if (!pipeline_path.empty()) {
    auto loaded = LoadPipeline(pipeline_path);
    if (!loaded.ok()) return Fail(loaded.status());
    spec = std::move(*loaded);
  } else {
    spec.name = "tasks";
    spec.models["model"] = model_dir;
    spec.tasks = task_files;
    spec.templates =
        !templates_path.empty()
            ? templates_path
            : (std::filesystem::path(task_files[0]).parent_path() / "templates.toml").string();
  }
  if (limit >= 0) spec.limit = limit;
  if (!workers.empty()) {
    if (spec.agents.empty())
      return Fail(InvalidArgument("--worker needs --pipeline (agents to place on the workers)"));
    for (size_t a = 0; a < spec.agents.size(); ++a) {
      spec.agents[a].worker = workers[a % workers.size()];
      spec.agents[a].model.clear();
    }
  }
  auto templates = LoadTemplates(spec.templates);
  if (!templates.ok()) return Fail(templates.status());
  std::vector<Task> tasks;
  for (const auto& file : spec.tasks) {
    auto loaded = LoadTasks(file, *templates, spec.limit);
    if (!loaded.ok()) return Fail(loaded.status());
    for (Task& task : *loaded) {
      if (spec.agents.empty()) {
        tasks.push_back(std::move(task));
        continue;
      }
      auto bound = BindTask(spec, std::move(task), *templates);
      if (!bound.ok()) return Fail(bound.status().WithContext(file));
      tasks.push_back(std::move(*bound));
    }
  }
  if (kv_delivery == "device" && device != "cuda")
    return Fail(InvalidArgument("--kv-delivery device needs --device cuda"));
  const auto delivery =
      kv_delivery == "device" ? client::Delivery::kDeviceIpc : client::Delivery::kFrames;
  // Models used in this process, loaded once for every mode.
  const auto run_device = device == "cuda" ? runtime::Device::kCuda : runtime::Device::kCpu;
  std::map<std::string, LoadedModel> models;
  for (const auto& [id, dir] : spec.models) {
    const bool used = spec.agents.empty() ||
                      std::any_of(spec.agents.begin(), spec.agents.end(),
                                  [&](const auto& a) { return a.worker.empty() && a.model == id; });
    if (!used) continue;
    auto loaded = LoadModel(dir, run_device);
    if (!loaded.ok()) return Fail(loaded.status().WithContext("model '" + id + "'"));
    models.emplace(id, std::move(*loaded));
  }

  std::vector<RunReport> reports;
  for (const std::string& mode_name : mode_names) {
    const ExecutorOptions options{*ParseMode(mode_name), fidelity,  // CLI11 checked the name
                                  bases_after_reply || spec.bases_after_reply,
                                  true_context_anchors || spec.true_context_anchors};
    const std::string run_namespace =
        mode_names.size() > 1 ? name_space + "-" + mode_name : name_space;
    ModeExecutors executors;
    for (auto& [id, loaded] : models) {
      client::Client* daemon = nullptr;
      if (options.mode != Mode::kDense) {
        client::ClientOptions connect;
        connect.endpoint = endpoint;
        connect.client_name = "kvcomm-pipeline";
        connect.name_space = run_namespace;
        connect.model = loaded.model->fingerprint();
        auto connected = client::Client::Connect(connect);
        if (!connected.ok()) return Fail(connected.status());
        daemon = connected->get();
        executors.daemons.push_back(std::move(*connected));
      }
      executors.by_model[id] = std::make_unique<LocalExecutor>(*loaded.model, *loaded.tokenizer,
                                                               options, daemon, delivery);
    }
    AgentSettings defaults;
    defaults.max_reply_tokens = max_reply_tokens;
    if (spec.agents.empty()) defaults.executor = executors.by_model.begin()->second.get();
    std::vector<AgentSettings> per_agent;
    for (const auto& agent : spec.agents) {
      AgentSettings settings{agent.id, agent.sampling, agent.max_reply_tokens, nullptr};
      if (agent.worker.empty()) {
        settings.executor = executors.by_model.at(agent.model).get();
      } else {
        auto& remote = executors.by_worker[agent.worker];
        if (!remote)
          remote = std::make_unique<RemoteExecutor>(agent.worker, options, run_namespace,
                                                    std::chrono::seconds(worker_timeout_s));
        settings.executor = remote.get();
      }
      per_agent.push_back(std::move(settings));
    }
    if (!defaults.executor) defaults.executor = per_agent.front().executor;
    PipelineRunner runner(*templates, defaults, std::move(per_agent));
    RunReport report;
    report.mode = mode_name;
    for (const Task& task : tasks) {
      auto run = runner.Run(task);
      if (!run.ok()) return Fail(run.status());
      for (const auto& turn : run->turns)
        if (turn.fallback || turn.store_failed)
          std::fprintf(stderr, "kvcomm-pipeline: %s: %s: %s\n", task.id.c_str(),
                       turn.fallback ? "ran dense" : "KV not stored", turn.daemon_error.c_str());
      report.Add(std::move(*run), task.scored);
    }
    PrintReport(report, device);
    reports.push_back(std::move(report));
  }
  if (reports.size() > 1) PrintComparison(reports);

  if (!json_path.empty()) {
    nlohmann::json out = {{"pipeline", spec.name}, {"device", device}};
    if (reports.size() == 1) {
      out.update(ReportJson(reports.front()));
    } else {
      out["runs"] = nlohmann::json::array();
      for (const auto& r : reports) out["runs"].push_back(ReportJson(r));
    }
    std::ofstream file(json_path);
    file << out.dump(1) << "\n";
    if (!file) return Fail(Error(ErrorCode::kInternal, "cannot write '{}'", json_path));
  }
  return 0;
}
