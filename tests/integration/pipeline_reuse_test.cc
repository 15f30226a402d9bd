// The pipeline runner's reuse modes against a real kvcommd, with the shipped model on CPU:
// `prefix` replies equal `dense` exactly, `naive` reuses what other agents computed, `kvcomm`
// workers share one anchor pool and get realigned KV, and a daemon that goes away turns into
// counted dense fallbacks, not failures.
#include <gtest/gtest.h>

#include "agents/pipeline/runner.h"
#include "tests/integration/daemon_fixture.h"

namespace kvcomm::testing {
namespace {

using namespace kvcomm::pipeline;

const std::string kSuite = KVCOMM_SOURCE_DIR "/bench/tasks";
const std::string kModel = KVCOMM_SOURCE_DIR "/models/kvcomm-tiny";

class PipelineReuseTest : public DaemonFixture {
 protected:
  void SetUp() override {
    DaemonFixture::SetUp();
    auto templates = LoadTemplates(kSuite + "/templates.toml");
    ASSERT_TRUE(templates.ok());
    templates_ = *templates;
    auto model = runtime::Model::Load(kModel);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    model_ = std::move(*model);
    auto tokenizer = runtime::Tokenizer::Load(kModel + "/tokenizer.model");
    ASSERT_TRUE(tokenizer.ok());
    tokenizer_ = std::move(*tokenizer);
    // Tasks in `rounds` topology: an agent's second-round prompt extends its first one.
    auto tasks = LoadTasks(kSuite + "/fact_relay.jsonl", templates_, 12);
    ASSERT_TRUE(tasks.ok());
    for (const Task& t : *tasks)
      if (t.topology == Topology::kRounds && tasks_.size() < 3) tasks_.push_back(t);
    ASSERT_EQ(tasks_.size(), 3u);
  }

  std::unique_ptr<client::Client> ConnectAsModel(const std::string& name_space = "pipeline") {
    client::ClientOptions options;
    options.endpoint = config_.server.endpoint;
    options.name_space = name_space;
    options.model = model_->fingerprint();
    options.timeout = std::chrono::milliseconds(2000);
    auto client = client::Client::Connect(options);
    EXPECT_TRUE(client.ok()) << client.status().ToString();
    return client.ok() ? std::move(client).value() : nullptr;
  }

  // A runner whose agents all run in this process on the shipped model.
  struct LocalPipeline {
    std::unique_ptr<LocalExecutor> executor;
    std::unique_ptr<PipelineRunner> runner;
    Result<TaskResult> Run(const Task& task) { return runner->Run(task); }
  };
  LocalPipeline Local(ExecutorOptions options = {}, client::Client* daemon = nullptr) {
    LocalPipeline p;
    p.executor = std::make_unique<LocalExecutor>(*model_, *tokenizer_, options, daemon);
    AgentSettings settings;
    settings.executor = p.executor.get();
    p.runner = std::make_unique<PipelineRunner>(templates_, settings);
    return p;
  }

  std::vector<TaskResult> RunAll(LocalPipeline& runner) {
    std::vector<TaskResult> results;
    for (const Task& task : tasks_) {
      auto run = runner.Run(task);
      EXPECT_TRUE(run.ok()) << run.status().ToString();
      if (run.ok()) results.push_back(std::move(*run));
    }
    return results;
  }

  static void ExpectSameReplies(const std::vector<TaskResult>& a,
                                const std::vector<TaskResult>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_EQ(a[i].turns.size(), b[i].turns.size());
      for (size_t t = 0; t < a[i].turns.size(); ++t)
        EXPECT_EQ(a[i].turns[t].reply, b[i].turns[t].reply) << a[i].task_id << " turn " << t;
    }
  }

  static int64_t Sum(const std::vector<TaskResult>& results, int64_t TurnResult::*field) {
    int64_t total = 0;
    for (const auto& r : results)
      for (const auto& t : r.turns) total += t.*field;
    return total;
  }

  TemplateSet templates_;
  std::unique_ptr<runtime::Model> model_;
  std::unique_ptr<runtime::Tokenizer> tokenizer_;
  std::vector<Task> tasks_;
};

TEST_F(PipelineReuseTest, PrefixModeRepliesEqualDenseAndReuseWhatWasComputed) {
  auto dense = Local();
  const auto reference = RunAll(dense);

  auto daemon = ConnectAsModel();
  ASSERT_NE(daemon, nullptr);
  auto prefix = Local({.mode = Mode::kPrefix, .measure_fidelity = true}, daemon.get());
  const auto first = RunAll(prefix);
  ExpectSameReplies(reference, first);
  // Second-round turns start with their agent's first-round prompt: that part is reused.
  const int64_t first_reused = Sum(first, &TurnResult::reused_tokens);
  EXPECT_GT(first_reused, 0);
  for (const auto& r : first)
    for (const auto& t : r.turns) EXPECT_FALSE(t.fallback || t.store_failed) << t.daemon_error;

  // The same tasks again: every prompt is stored, so all but the last token is reused.
  const auto second = RunAll(prefix);
  ExpectSameReplies(reference, second);
  // Exact reuse on CPU (fp32 segments): the reused KV and the next-token distribution are
  // those of a full prefill.
  for (const auto& r : second) {
    for (const auto& t : r.turns) {
      EXPECT_NEAR(t.kv_relative_error, 0.0, 1e-6) << r.task_id;
      EXPECT_NEAR(t.next_token_kl, 0.0, 1e-6) << r.task_id;
    }
  }
  for (const auto& r : second)
    for (const auto& t : r.turns) EXPECT_EQ(t.reused_tokens, t.prompt_tokens - 1) << r.task_id;
  EXPECT_GT(Sum(second, &TurnResult::reused_tokens), 2 * first_reused);
}

TEST_F(PipelineReuseTest, NaiveModeAlsoReusesPlaceholdersComputedByOtherAgents) {
  auto prefix_daemon = ConnectAsModel("prefix");
  auto naive_daemon = ConnectAsModel("naive");
  ASSERT_TRUE(prefix_daemon && naive_daemon);
  auto prefix = Local({.mode = Mode::kPrefix}, prefix_daemon.get());
  auto naive = Local({.mode = Mode::kNaive, .measure_fidelity = true}, naive_daemon.get());
  const auto exact = RunAll(prefix);
  const auto realigned = RunAll(naive);
  for (const auto& r : realigned)
    for (const auto& t : r.turns) EXPECT_FALSE(t.fallback || t.store_failed) << t.daemon_error;
  // Every agent after the first finds the shared question (computed by the first agent at
  // another offset, since agents' headers differ) and earlier agents' messages.
  for (const auto& r : realigned)
    for (size_t t = 1; t < r.turns.size(); ++t) EXPECT_GT(r.turns[t].reused_tokens, 0) << r.task_id;
  EXPECT_GT(Sum(realigned, &TurnResult::reused_tokens), Sum(exact, &TurnResult::reused_tokens));
  // Placeholders keep the context they were computed in: their KV is measurably off (from
  // layer 1 on), but close.
  double worst = 0;
  for (const auto& r : realigned)
    for (const auto& t : r.turns) worst = std::max(worst, t.kv_relative_error);
  EXPECT_GT(worst, 1e-3);
  EXPECT_LT(worst, 1.0);
  // The very first turn has nothing to reuse: it is a dense turn.
  auto dense = Local();
  auto reference = dense.Run(tasks_[0]);
  ASSERT_TRUE(reference.ok());
  EXPECT_EQ(realigned[0].turns[0].reply, reference->turns[0].reply);
  EXPECT_EQ(realigned[0].turns[0].reused_tokens, 0);
}

TEST_F(PipelineReuseTest, KvcommWorkersShareAnchorsGetRealignedKvAndKeepAnswers) {
  auto tasks = LoadTasks(kSuite + "/fact_relay.jsonl", templates_, 12);
  ASSERT_TRUE(tasks.ok());
  auto dense = Local();
  // Two workers, each with its own connection, take turns on the tasks.
  auto daemon_a = ConnectAsModel("kvcomm"), daemon_b = ConnectAsModel("kvcomm");
  ASSERT_TRUE(daemon_a && daemon_b);
  const ExecutorOptions options{.mode = Mode::kKvcomm, .measure_fidelity = true};
  auto worker_a = Local(options, daemon_a.get());
  auto worker_b = Local(options, daemon_b.get());
  int dense_correct = 0, kvcomm_correct = 0, same_answers = 0;
  int64_t realigned = 0, anchor_turns = 0, anchor_turns_reusing = 0, checked = 0;
  int64_t checked_as_dense = 0;  // checked turns whose prompt was dense's
  for (size_t i = 0; i < tasks->size(); ++i) {
    auto reference = dense.Run((*tasks)[i]);
    auto run = (i % 2 ? worker_b : worker_a).Run((*tasks)[i]);
    ASSERT_TRUE(reference.ok() && run.ok()) << run.status().ToString();
    dense_correct += reference->correct;
    kvcomm_correct += run->correct;
    same_answers += reference->final_reply == run->final_reply;
    bool same_so_far = true;  // every earlier turn of the task replied as dense did
    for (size_t k = 0; k < run->turns.size(); ++k) {
      const TurnResult& t = run->turns[k];
      // A checked turn answers from its full prefill: dense's reply, given the same prompt.
      if (t.checked && same_so_far) {
        EXPECT_EQ(t.reply, reference->turns[k].reply) << (*tasks)[i].id << " turn " << k;
        ++checked_as_dense;
      }
      same_so_far = same_so_far && t.reply == reference->turns[k].reply;
      EXPECT_FALSE(t.fallback || t.store_failed) << t.daemon_error;
      realigned += t.realigned_tokens;
      anchor_turns += t.made_anchors;
      // An anchor-making turn imports realigned spans and reports over them (not
      // true_context_anchors): it sets none aside. (A checked turn used realigned KV too, but
      // answers from its full prefill, so it counts none.)
      anchor_turns_reusing += t.made_anchors && (t.realigned_tokens > 0 || t.checked);
      EXPECT_EQ(t.recomputed_tokens, 0);
      checked += t.checked;
      if (t.checked) {
        EXPECT_EQ(t.reused_placeholder_tokens, 0);
      }
      if (t.realigned_tokens > 0) {
        EXPECT_LT(t.kv_relative_error, 0.5);
      }
    }
  }
  EXPECT_GT(anchor_turns, 0);
  EXPECT_GT(anchor_turns_reusing, 0);
  EXPECT_GT(checked, 0) << "kvcommd asks for the first estimates of each slot to be checked";
  EXPECT_GT(checked_as_dense, 0);
  EXPECT_GT(realigned, 0) << "no placeholder was realigned from anchors";
  EXPECT_GE(kvcomm_correct, dense_correct - 1);
  EXPECT_GE(same_answers, static_cast<int>(tasks->size()) - 2);

  // The daemon's view: anchors with both workers' agents, and realigned tokens counted.
  auto slots = daemon_a->ListAnchors();
  ASSERT_TRUE(slots.ok()) << slots.status().ToString();
  EXPECT_FALSE(slots->empty());
  auto stats = daemon_b->Stats();
  ASSERT_TRUE(stats.ok());
  uint64_t served = 0, created = 0, checks = 0;
  for (const auto& c : stats->reuse) {
    EXPECT_EQ(c.name_space, "kvcomm");
    served += c.tokens_realigned;
    created += c.anchors_created;
    checks += c.checks;
  }
  EXPECT_GE(checks, static_cast<uint64_t>(checked));  // one per slot a checked turn estimated
  EXPECT_GE(static_cast<int64_t>(served), realigned);
  EXPECT_GT(created, 0u);

  // Every reply another agent reads had its base stored by its author, right after its turn.
  auto authored = Local(options, daemon_a.get()).Run((*tasks)[0]);
  ASSERT_TRUE(authored.ok()) << authored.status().ToString();
  const Hash128 base_prefix = TokenPrefixHash(BasePrefix(*tokenizer_, 1));
  for (size_t t = 0; t + 1 < authored->turns.size(); ++t) {
    auto message = tokenizer_->Encode(authored->turns[t].reply + "\n");
    ASSERT_TRUE(message.ok());
    const SegmentKey key =
        ComputeContextKey(model_->fingerprint(), "kvcomm", base_prefix, *message);
    auto found = daemon_a->Lookup({{key, client::KeyKind::kContext}});
    ASSERT_TRUE(found.ok());
    EXPECT_TRUE(found->front().found) << "no base for the reply of turn " << t;
  }

  // The pools outlive a daemon restart: the same anchors, each with its agents' deltas.
  daemon_a.reset();
  daemon_b.reset();
  StopDaemon();
  StartDaemon();
  auto reader = ConnectAsModel("kvcomm");
  ASSERT_TRUE(reader);
  auto restored = reader->ListAnchors();
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  ASSERT_EQ(restored->size(), slots->size());
  for (size_t i = 0; i < slots->size(); ++i) {
    EXPECT_EQ((*restored)[i].slot, (*slots)[i].slot);
    ASSERT_EQ((*restored)[i].anchors.size(), (*slots)[i].anchors.size());
    for (size_t a = 0; a < (*slots)[i].anchors.size(); ++a)
      EXPECT_EQ((*restored)[i].anchors[a].agents, (*slots)[i].anchors[a].agents);
  }
}

TEST_F(PipelineReuseTest, TrueContextAnchorsComputeWhatPrecedesAReportAndKeepAnswers) {
  auto tasks = LoadTasks(kSuite + "/fact_relay.jsonl", templates_, 12);
  ASSERT_TRUE(tasks.ok());
  auto dense = Local();
  auto daemon = ConnectAsModel("true-context");
  ASSERT_TRUE(daemon);
  auto kvcomm = Local({.mode = Mode::kKvcomm, .true_context_anchors = true}, daemon.get());
  int dense_correct = 0, kvcomm_correct = 0;
  int64_t recomputed = 0, realigned = 0;
  for (const Task& task : *tasks) {
    auto reference = dense.Run(task);
    auto run = kvcomm.Run(task);
    ASSERT_TRUE(reference.ok() && run.ok()) << run.status().ToString();
    dense_correct += reference->correct;
    kvcomm_correct += run->correct;
    for (const TurnResult& t : run->turns) {
      EXPECT_FALSE(t.fallback || t.store_failed) << t.daemon_error;
      recomputed += t.recomputed_tokens;
      realigned += t.realigned_tokens;
    }
  }
  // The relay's messages follow the realigned input: reporting one recomputes the input.
  EXPECT_GT(recomputed, 0);
  EXPECT_GT(realigned, 0);
  EXPECT_GE(kvcomm_correct, dense_correct - 1);
}

TEST_F(PipelineReuseTest, BasesAfterTheReplyLeaveTheFirstReaderDenseAndItsOfferMakesTheAnchor) {
  auto dense = Local();
  auto daemon = ConnectAsModel("after-reply");
  ASSERT_TRUE(daemon);
  auto kvcomm = Local({.mode = Mode::kKvcomm, .bases_after_reply = true}, daemon.get());
  for (const Task& task : tasks_) {
    SCOPED_TRACE(task.id);
    auto reference = dense.Run(task);
    auto run = kvcomm.Run(task);
    ASSERT_TRUE(reference.ok() && run.ok()) << run.status().ToString();
    ASSERT_GE(run->turns.size(), 2u);
    for (const TurnResult& t : run->turns)
      EXPECT_FALSE(t.fallback || t.store_failed) << t.daemon_error;
    // The first reader of the new input computed it in its prompt: nothing estimated, dense's
    // reply, and no anchor (kvcommd had no base to plan one with).
    const TurnResult& first = run->turns[0];
    EXPECT_EQ(first.reused_placeholder_tokens, 0);
    EXPECT_FALSE(first.made_anchors);
    EXPECT_EQ(first.reply, reference->turns[0].reply);
    // It stored the input's base after its reply and offered its KV of the input, which
    // kvcommd kept as the anchor (new content): the next reader, of the same role, gets the
    // input realigned with that anchor's deltas instead of computing and reporting it (its
    // first estimates are checked, and a checked turn counts no reuse).
    const TurnResult& second = run->turns[1];
    EXPECT_FALSE(second.made_anchors);
    EXPECT_TRUE(second.reused_placeholder_tokens > 0 || second.checked);
  }
}

TEST_F(PipelineReuseTest, LosingTheDaemonFallsBackToDenseAndSaysSo) {
  auto dense = Local();
  const auto reference = RunAll(dense);
  auto daemon = ConnectAsModel();
  ASSERT_NE(daemon, nullptr);
  daemon->set_timeout(std::chrono::milliseconds(200));
  auto prefix = Local({.mode = Mode::kPrefix}, daemon.get());
  StopDaemon();
  const auto results = RunAll(prefix);
  ExpectSameReplies(reference, results);
  for (const auto& r : results) {
    for (const auto& t : r.turns) {
      EXPECT_TRUE(t.fallback);
      EXPECT_EQ(t.reused_tokens, 0);
      EXPECT_NE(t.daemon_error.find("Unavailable"), std::string::npos) << t.daemon_error;
    }
  }
}

}  // namespace
}  // namespace kvcomm::testing
