// daemon_pipeline_bench: pipeline_bench's workload through the product's own path: a kvcommd
// process, agents that plan every prompt with it (agents/pipeline/segment_reuse.h, the code
// kvcomm-agent runs), and KV handed over in place through CUDA IPC (--delivery device) or as
// ZeroMQ frames (--delivery frames). Dense and kvcomm turns run side by side in one process.
//   daemon_pipeline_bench --shape llama3-8b                       the setting on the GPU
//   daemon_pipeline_bench --device cpu --delivery frames --shape tiny-20m --input-tokens 96
//                         --prefix-tokens 32 --output-tokens 16   a quick check on CPU
//
// Workload (pipeline_bench's): agent i's prompt is BOS + its own prefix + a label + the shared
// input, and from round 2 on, per other agent, a label + that agent's previous reply; a short
// cue ends it. Replies are greedy. Each run has a new input (so new replies).
//
// The anchor pools fill the way they do in service: --warm-runs whole pipeline runs first, in
// which placeholders without two anchors are prefilled and their actual KV reported; the run
// timed after them reuses. kvcommd runs KVCOMM's reuse rule, but random weights make every
// placeholder equally far from every anchor, so the rule's thresholds are opened (entropy
// threshold 1, no distance limit: reuse whenever two anchors have deltas for the agent); the
// work per turn does not depend on that choice. anchors.borrow_deltas is off, so that every
// reader of a new anchor reports its own deltas (with borrowing an agent gets deltas of its own
// only as the first reader of new content, two runs per reader). kvcommd's answer-level checks
// run at their default rate: a checked turn answers from a full prefill and computes the reused
// turn after it to compare; as random weights make that comparison meaningless, no outcome
// stops reuse (checks.max_changed = 1), but every check kvcommd asks for is paid for. Four
// warm-up runs (the default) reach the steady state: every agent has deltas in two anchors of
// each slot, and the first checks of each slot and agent are behind.
// TTFT counts from the turn's start (the plan request) to the first reply token's logits;
// storing the turn's KV, reports and the reply's base afterwards are timed apart ("after").
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "agents/client/client.h"
#include "agents/pipeline/segment_reuse.h"
#include "agents/pipeline/turn.h"
#include "agents/runtime/model.h"
#include "agents/runtime/weights.h"
#include "bench/greedy_turns.h"
#include "bench/model_shapes.h"
#include "kernels/device.h"

extern char** environ;

using namespace kvcomm;
using namespace kvcomm::runtime;
using Clock = std::chrono::steady_clock;

namespace {

void Check(const Status& s) { bench::ExitOnError("daemon_pipeline_bench", s); }
template <typename T>
T Check(Result<T> r) {
  Check(r.status());
  return std::move(r).value();
}

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// kvcommd in a child process, stopped (SIGTERM) when this goes away.
class Daemon {
 public:
  Daemon(const std::string& binary, const std::filesystem::path& dir, const std::string& toml,
         const std::string& log_level) {
    const auto config = dir / "kvcommd.toml";
    std::ofstream(config) << toml;
    std::vector<std::string> args = {binary, "--config", config.string(), "--log-level", log_level};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, binary.c_str(), nullptr, nullptr, argv.data(), environ) != 0)
      Check(Error(ErrorCode::kUnavailable, "cannot start {}", binary));
  }
  ~Daemon() {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }

 private:
  pid_t pid_ = 0;
};

struct Options {
  int agents = 5, rounds = 2, warm_runs = 4;
  int64_t input_tokens = 1024, prefix_tokens = 512, output_tokens = 512, label_tokens = 8;
  bool bases_after_reply = false;
  bool true_context_anchors = false;
};

struct TurnTiming {
  double ttft = 0, import = 0, decode = 0, after = 0;
  double bases = 0, plan = 0, copy = 0;  // parts of `import`
  double daemon_plan = 0;                // of `plan`, kvcommd's own time (its stats)
  double prefill = 0;                    // of the spans not imported, in one pass
  int64_t gaps = 0;                      // runs of them
  double cue_again = 0;  // --probe: the last span alone, computed once more right after
  int64_t prompt_tokens = 0, reused_tokens = 0;
  // kvcommd asked for a check: the turn answered from a full prefill (TTFT = import + that
  // prefill) and ran the reused prefill and reply afterwards to compare (in `after`).
  bool checked = false;
  std::vector<int32_t> reply;
};
using RunTimings = std::vector<std::vector<TurnTiming>>;  // [round][agent]

class Bench {
 public:
  Bench(const Model& model, client::Client& daemon, client::Delivery delivery, Options o)
      : model_(model), daemon_(daemon), o_(o), rng_(7) {
    const DType dtype = model.device() == Device::kCpu ? DType::kF32 : DType::kBF16;
    base_prefix_ = {Bos()};
    const auto lead_in = RandomTokens(4);
    base_prefix_.insert(base_prefix_.end(), lead_in.begin(), lead_in.end());
    reuse_.emplace(daemon, model, dtype, pipeline::Mode::kKvcomm,
                   pipeline::ReuseOptions{base_prefix_, delivery, o.bases_after_reply,
                                          o.true_context_anchors});
    for (int i = 0; i < o.agents; ++i) prefixes_.push_back(RandomTokens(o.prefix_tokens));
    label_input_ = RandomTokens(o.label_tokens);
    label_reply_ = RandomTokens(o.label_tokens);
    cue_ = RandomTokens(o.label_tokens);
  }

  std::vector<int32_t> NewInput() { return RandomTokens(o_.input_tokens); }
  void set_probe(bool probe) { probe_ = probe; }

  RunTimings Run(const std::vector<int32_t>& input, bool kvcomm) {
    RunTimings rounds;
    std::vector<std::vector<int32_t>> replies(o_.agents);
    for (int r = 0; r < o_.rounds; ++r) {
      std::vector<TurnTiming> turns;
      for (int i = 0; i < o_.agents; ++i) {
        pipeline::TokenizedPrompt prompt;
        std::vector<pipeline::SegmentSpan> spans;
        auto add = [&](const std::vector<int32_t>& tokens, pipeline::SegmentKind kind,
                       std::string slot) {
          const int64_t begin = static_cast<int64_t>(prompt.tokens.size());
          prompt.segment_begin.push_back(begin);
          prompt.tokens.insert(prompt.tokens.end(), tokens.begin(), tokens.end());
          spans.push_back({begin, static_cast<int64_t>(prompt.tokens.size()), kind, slot});
        };
        std::vector<int32_t> own = {Bos()};
        own.insert(own.end(), prefixes_[i].begin(), prefixes_[i].end());
        own.insert(own.end(), label_input_.begin(), label_input_.end());
        add(own, pipeline::SegmentKind::kText, "");
        add(input, pipeline::SegmentKind::kInput, "input");
        if (r > 0)
          for (int j = 0; j < o_.agents; ++j) {
            if (j == i) continue;
            add(label_reply_, pipeline::SegmentKind::kText, "");
            add(replies[j], pipeline::SegmentKind::kMessage, "reply." + std::to_string(j));
          }
        add(cue_, pipeline::SegmentKind::kText, "");
        const bool read_later = r + 1 < o_.rounds;
        turns.push_back(kvcomm ? ReuseTurn(prompt, spans, i, read_later) : DenseTurn(prompt));
      }
      for (int i = 0; i < o_.agents; ++i) replies[i] = turns[i].reply;
      rounds.push_back(std::move(turns));
    }
    return rounds;
  }

 private:
  int32_t Bos() const {
    return model_.config().bos_token_id >= 0 ? model_.config().bos_token_id : 1;
  }
  std::vector<int32_t> RandomTokens(int64_t n) {
    std::vector<int32_t> t(n);
    for (auto& x : t) x = 3 + static_cast<int32_t>(rng_() % (model_.config().vocab_size - 3));
    return t;
  }

  TurnTiming DenseTurn(const pipeline::TokenizedPrompt& prompt) {
    TurnTiming turn;
    turn.prompt_tokens = static_cast<int64_t>(prompt.tokens.size());
    auto dense = Check(bench::DenseTurn(model_, prompt.tokens, o_.output_tokens));
    turn.ttft = dense.ttft;
    turn.decode = dense.decode;
    turn.reply = std::move(dense.reply);
    return turn;
  }

  TurnTiming ReuseTurn(const pipeline::TokenizedPrompt& prompt,
                       const std::vector<pipeline::SegmentSpan>& spans, int agent,
                       bool read_later) {
    TurnTiming turn;
    turn.prompt_tokens = static_cast<int64_t>(prompt.tokens.size());
    auto cache = Check(model_.NewCache(turn.prompt_tokens + o_.output_tokens));
    const std::string name = "agent" + std::to_string(agent);
    const double daemon_before = DaemonPlanSeconds(name);
    const auto start = Clock::now();
    auto imported = Check(reuse_->Import(prompt, spans, name, cache));
    turn.import = Seconds(start);
    turn.bases = imported.bases_seconds;
    turn.plan = imported.plan_seconds;
    turn.copy = imported.copy_seconds;
    std::vector<std::string> realigned_slots;
    if (imported.check_reuse) realigned_slots = pipeline::RealignedSlots(spans, imported);
    turn.checked = !realigned_slots.empty();
    std::optional<bench::DenseTurnTiming> full;
    if (turn.checked) {
      full = Check(bench::DenseTurn(model_, prompt.tokens, o_.output_tokens));
      turn.ttft = turn.import + full->ttft;
      turn.decode = full->decode;
    }
    const auto reused_start = Clock::now();
    std::span<const int32_t> tokens(prompt.tokens);
    // The spans not imported, merged into runs, in one pass (the cue, last, is never imported).
    std::vector<Model::TokenRun> runs;
    for (size_t s = 0; s < spans.size(); ++s) {
      if (imported.imported(s)) {
        if (!turn.checked) turn.reused_tokens += spans[s].tokens();
        continue;
      }
      if (s > 0 && !imported.imported(s - 1)) {
        runs.back().tokens =
            tokens.subspan(runs.back().position, spans[s].end - runs.back().position);
      } else {
        runs.push_back({tokens.subspan(spans[s].begin, spans[s].tokens()), spans[s].begin});
      }
    }
    turn.gaps = static_cast<int64_t>(runs.size());
    std::vector<float> logits = Check(model_.ForwardRuns(runs, cache));
    if (!turn.checked) turn.ttft = Seconds(start);
    turn.prefill = Seconds(reused_start);
    Check(reuse_->ReleaseLeases(imported));  // after the first token: not needed for it
    turn.daemon_plan = DaemonPlanSeconds(name) - daemon_before;
    if (probe_) {
      // The last run alone, right after, over the same cache: what one more gap costs.
      cache.Truncate(runs.back().position);
      const auto again = Clock::now();
      logits = Check(model_.Forward(runs.back().tokens, cache));
      turn.cue_again = Seconds(again);
    }
    const std::vector<float> first_logits = turn.checked ? logits : std::vector<float>();
    double decode = 0;
    turn.reply = Check(bench::GreedyReply(model_, logits, cache, o_.output_tokens, &decode));
    if (turn.checked) {
      // Random weights: whether the reply changed says nothing, but kvcommd's tallies and the
      // time the check costs are the real ones. (No slot is blamed: that search runs only
      // after a changed reply, which these replies cannot mean.)
      Check(reuse_->ReportCheck(std::move(realigned_slots), {}, name, turn.reply != full->reply,
                                pipeline::KlDivergence(full->logits, first_logits)));
      turn.reply = std::move(full->reply);
      turn.after = turn.prefill + decode;
    } else {
      turn.decode = decode;
    }
    const auto after = Clock::now();
    Check(reuse_->Store(prompt, spans, imported, cache));
    Check(reuse_->Report(prompt, spans, imported, name, cache));
    if (read_later) Check(reuse_->StoreBase(turn.reply));
    turn.after += Seconds(after);
    return turn;
  }

  // kvcommd's time answering this agent's plans so far.
  double DaemonPlanSeconds(const std::string& agent) {
    double total = 0;
    for (const auto& c : Check(daemon_.Stats()).reuse)
      if (c.agent == agent) total += c.plan_seconds;
    return total;
  }

  const Model& model_;
  client::Client& daemon_;
  Options o_;
  bool probe_ = false;
  std::mt19937_64 rng_;
  std::vector<int32_t> base_prefix_;
  std::optional<pipeline::SegmentReuse> reuse_;
  std::vector<std::vector<int32_t>> prefixes_;
  std::vector<int32_t> label_input_, label_reply_, cue_;
};

void PrintRun(const char* title, const RunTimings& dense, const RunTimings& kvcomm) {
  std::printf("\n%s\n", title);
  double dense_ttft = 0, kvcomm_ttft = 0, dense_e2e = 0, kvcomm_e2e = 0;
  int turns = 0;
  for (size_t r = 0; r < kvcomm.size(); ++r) {
    std::printf("round %zu\n%-7s %8s %8s %11s %11s %10s %8s %10s %10s %10s\n", r + 1, "agent",
                "prompt", "reused", "dense TTFT", "kvcomm TTFT", "of it plan", "speedup",
                "dense e2e", "kvcomm e2e", "after turn");
    for (size_t i = 0; i < kvcomm[r].size(); ++i) {
      const TurnTiming &d = dense[r][i], &k = kvcomm[r][i];
      std::printf(
          "%-7zu %8lld %7.1f%% %8.1f ms %8.1f ms %7.1f ms %7.2fx %8.0f ms %8.0f ms %7.0f ms\n", i,
          static_cast<long long>(k.prompt_tokens), 100.0 * k.reused_tokens / k.prompt_tokens,
          1e3 * d.ttft, 1e3 * k.ttft, 1e3 * k.import, d.ttft / k.ttft, 1e3 * (d.ttft + d.decode),
          1e3 * (k.ttft + k.decode + k.after), 1e3 * k.after);
      dense_ttft += d.ttft;
      kvcomm_ttft += k.ttft;
      dense_e2e += d.ttft + d.decode;
      kvcomm_e2e += k.ttft + k.decode + k.after;
      ++turns;
    }
    TurnTiming mean;
    int checked = 0;
    for (const auto& k : kvcomm[r]) {
      checked += k.checked ? 1 : 0;
      for (auto [sum, part] : {std::pair{&mean.bases, k.bases},
                               {&mean.plan, k.plan},
                               {&mean.copy, k.copy},
                               {&mean.daemon_plan, k.daemon_plan},
                               {&mean.prefill, k.prefill},
                               {&mean.cue_again, k.cue_again}})
        *sum += part / static_cast<double>(kvcomm[r].size());
    }
    std::printf(
        "kvcomm TTFT by phase, mean over agents: bases %.1f ms, plan round trip %.1f ms (kvcommd "
        "%.1f ms of it), copy into the cache %.1f ms, prefill of the rest %.1f ms (%lld gaps in "
        "one pass",
        1e3 * mean.bases, 1e3 * mean.plan, 1e3 * mean.daemon_plan, 1e3 * mean.copy,
        1e3 * mean.prefill, static_cast<long long>(kvcomm[r].front().gaps));
    if (mean.cue_again > 0) std::printf("; the last alone again: %.1f ms", 1e3 * mean.cue_again);
    std::printf(")");
    if (checked > 0)
      std::printf("; %d checked turns (answered from a full prefill, reused turn after it)",
                  checked);
    std::printf("\n");
  }
  std::printf(
      "all turns: mean TTFT dense %.1f ms, kvcomm %.1f ms (%.2fx); end to end %.2f s vs %.2f s "
      "(%.2fx)\n",
      1e3 * dense_ttft / turns, 1e3 * kvcomm_ttft / turns, dense_ttft / kvcomm_ttft, dense_e2e,
      kvcomm_e2e, dense_e2e / kvcomm_e2e);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"daemon_pipeline_bench: TTFT of fully connected agents through kvcommd"};
  std::string device = "cuda", shape = "llama3-8b", delivery_name = "device";
  std::string kvcommd = (std::filesystem::path(argv[0]).parent_path() / "kvcommd").string();
  std::string gpu_capacity = "32GiB", arena = "4GiB", kvcommd_log_level = "warn";
  Options o;
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--delivery", delivery_name,
                 "how kvcommd hands KV over: device (CUDA IPC) or frames")
      ->check(CLI::IsMember({"device", "frames"}));
  app.add_option("--shape", shape, "llama3-8b or tiny-20m (random weights)");
  app.add_option("--kvcommd", kvcommd, "the kvcommd binary")->check(CLI::ExistingFile);
  app.add_option("--gpu-capacity", gpu_capacity, "kvcommd's GPU tier");
  app.add_option("--ipc-arena", arena, "kvcommd's lease arena");
  app.add_option("--kvcommd-log-level", kvcommd_log_level,
                 "kvcommd's log level (debug: the time of each put and plan step)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.add_option("--agents", o.agents, "agents, all reading each other")->check(CLI::Range(2, 16));
  app.add_option("--rounds", o.rounds, "rounds (replies are read from round 2 on)")
      ->check(CLI::Range(1, 8));
  app.add_option("--warm-runs", o.warm_runs, "whole runs that fill the anchor pools first")
      ->check(CLI::Range(0, 8));
  app.add_flag("--bases-after-reply", o.bases_after_reply,
               "the first reader of new content computes it in its prompt and stores its base "
               "after the reply (pipeline::ReuseOptions)");
  app.add_flag("--true-context-anchors", o.true_context_anchors,
               "anchor-making turns compute the realigned spans before what they report again, "
               "in their true context (pipeline::ReuseOptions)");
  app.add_option("--input-tokens", o.input_tokens, "shared input")->check(CLI::Range(8, 65536));
  app.add_option("--prefix-tokens", o.prefix_tokens, "each agent's own prefix")
      ->check(CLI::Range(1, 65536));
  app.add_option("--output-tokens", o.output_tokens, "reply length")->check(CLI::Range(1, 8192));
  bool probe = false;
  app.add_flag("--probe", probe,
               "in the timed run, prefill each prompt's last gap (its cue) once more, alone, "
               "right after the turn: what one more pass over the weights costs");
  CLI11_PARSE(app, argc, argv);
  const bool cuda = device == "cuda";
  const auto delivery =
      delivery_name == "device" ? client::Delivery::kDeviceIpc : client::Delivery::kFrames;
  if (!cuda && delivery == client::Delivery::kDeviceIpc)
    Check(InvalidArgument("--delivery device needs --device cuda"));

  const auto dir =
      std::filesystem::temp_directory_path() / ("kvcomm_daemon_bench_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string endpoint = "ipc://" + (dir / "kvcommd.sock").string();
  std::string toml = fmt::format(
      "endpoint = \"{}\"\nmax_request_bytes = \"2GiB\"\nworkers = 2\n"
      "[store]\npersist = false\nhost_capacity = \"16GiB\"\ngpu_capacity = \"{}\"\n"
      "[anchors]\nentropy_threshold = 1.0\nmax_relative_distance = 0.0\nborrow_deltas = false\n"
      "[checks]\nmax_changed = 1.0\n",
      endpoint, cuda ? gpu_capacity : "0");
  if (cuda) toml += fmt::format("[ipc]\narena = \"{}\"\nlease_ttl_ms = 60000\n", arena);
  Daemon daemon(kvcommd, dir, toml, kvcommd_log_level);

  const ModelConfig config = bench::Shape(shape);
  const auto load_start = Clock::now();
  auto model = Check(cuda ? Model::RandomOnGpu(config, 1)
                          : Model::FromWeights(config, RandomWeights(config, 1), Device::kCpu));
  client::ClientOptions options{endpoint, "daemon_pipeline_bench", "bench", model->fingerprint(),
                                std::chrono::milliseconds(120000)};
  std::unique_ptr<client::Client> client;
  for (int attempt = 0; attempt < 100 && !client; ++attempt) {
    auto connected = client::Client::Connect(options);
    if (connected.ok()) {
      client = std::move(connected).value();
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  if (!client) Check(Error(ErrorCode::kUnavailable, "kvcommd did not answer at {}", endpoint));
  std::printf(
      "daemon_pipeline_bench: %s (%.2fB parameters, %s, random weights) on %s, loaded in %.1f s\n"
      "kvcommd (a separate process) delivers KV by %s; %d agents fully connected, %d rounds; "
      "input %lld tokens, prefixes %lld, replies %lld; %d warm-up runs fill the anchor pools; "
      "new content's bases stored %s; anchors reported %s\n",
      shape.c_str(), bench::Parameters(config) / 1e9, cuda ? "bf16" : "fp32",
      cuda ? kernels::CudaDeviceDescription().c_str() : "CPU", Seconds(load_start),
      delivery_name == "device" ? "CUDA IPC (in place on the GPU)" : "ZeroMQ frames", o.agents,
      o.rounds, static_cast<long long>(o.input_tokens), static_cast<long long>(o.prefix_tokens),
      static_cast<long long>(o.output_tokens), o.warm_runs,
      o.bases_after_reply ? "after the first reader's reply" : "before its first reader's plan",
      o.true_context_anchors ? "from their true context" : "over the realigned spans before them");

  Bench bench(*model, *client, delivery, o);
  Check(bench::WarmUp(*model));
  for (int w = 0; w < o.warm_runs; ++w) {
    const auto start = Clock::now();
    bench.Run(bench.NewInput(), true);
    std::printf("warm-up run %d: %.1f s\n", w + 1, Seconds(start));
  }
  const auto input = bench.NewInput();
  bench.set_probe(probe);
  const RunTimings dense = bench.Run(input, false);
  const RunTimings kvcomm = bench.Run(input, true);
  PrintRun("timed run (after the warm-up runs)", dense, kvcomm);

  const auto stats = Check(client->Stats());
  uint64_t requested = 0, exact = 0, realigned = 0, prefill = 0, created = 0;
  double realign_seconds = 0;
  for (const auto& c : stats.reuse) {
    requested += c.tokens_requested;
    exact += c.tokens_exact;
    realigned += c.tokens_realigned;
    prefill += c.tokens_prefill;
    created += c.anchors_created;
    realign_seconds += c.realign_seconds;
  }
  std::printf(
      "\nkvcommd over all runs: %llu tokens planned, %llu exact, %llu realigned, %llu prefill; "
      "%llu anchors made; %.1f ms realigning\n",
      static_cast<unsigned long long>(requested), static_cast<unsigned long long>(exact),
      static_cast<unsigned long long>(realigned), static_cast<unsigned long long>(prefill),
      static_cast<unsigned long long>(created), 1e3 * realign_seconds);
  client.reset();
  std::filesystem::remove_all(dir);
  return 0;
}
