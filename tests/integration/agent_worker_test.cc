// kvcomm-agent workers (AgentWorker on real ZeroMQ sockets) with a real kvcommd and the shipped
// model on CPU: a pipeline driver spreads the five-agent example over two workers in kvcomm
// mode and gets dense's answers with realigned KV; hostile requests get errors and the worker
// keeps serving; a worker without kvcommd runs turns in full and says so; a missing worker is a
// clear error.
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <zmq.hpp>

#include "agents/pipeline/internal/turn_wire.h"
#include "agents/pipeline/pipeline_spec.h"
#include "agents/pipeline/remote_executor.h"
#include "agents/pipeline/runner.h"
#include "agents/pipeline/worker.h"
#include "schemas/wire.h"
#include "tests/integration/daemon_fixture.h"

namespace kvcomm::testing {
namespace {

using namespace kvcomm::pipeline;

const std::string kModel = KVCOMM_SOURCE_DIR "/models/kvcomm-tiny";

// An AgentWorker with its own copy of the model, serving on a thread until destroyed.
class ServingWorker {
 public:
  ServingWorker(std::string endpoint, WorkerOptions options) : endpoint_(std::move(endpoint)) {
    auto model = runtime::Model::Load(kModel);
    auto tokenizer = runtime::Tokenizer::Load(kModel + "/tokenizer.model");
    EXPECT_TRUE(model.ok() && tokenizer.ok());
    model_ = std::move(*model);
    tokenizer_ = std::move(*tokenizer);
    worker_ = std::make_unique<AgentWorker>(*model_, *tokenizer_, std::move(options));
    thread_ = std::thread([this] { served_ = worker_->Serve(endpoint_, stop_); });
  }
  ~ServingWorker() {
    stop_.store(true);
    thread_.join();
    EXPECT_TRUE(served_.ok()) << served_.ToString();
  }
  const std::string& endpoint() const { return endpoint_; }
  int64_t turns_served() const { return worker_->turns_served(); }

 private:
  std::string endpoint_;
  std::unique_ptr<runtime::Model> model_;
  std::unique_ptr<runtime::Tokenizer> tokenizer_;
  std::unique_ptr<AgentWorker> worker_;
  std::atomic<bool> stop_{false};
  Status served_;
  std::thread thread_;
};

class AgentWorkerTest : public DaemonFixture {
 protected:
  void SetUp() override {
    DaemonFixture::SetUp();
    auto model = runtime::Model::Load(kModel);
    ASSERT_TRUE(model.ok());
    model_ = std::move(*model);
    auto tokenizer = runtime::Tokenizer::Load(kModel + "/tokenizer.model");
    ASSERT_TRUE(tokenizer.ok());
    tokenizer_ = std::move(*tokenizer);
    auto spec = LoadPipeline(KVCOMM_SOURCE_DIR "/examples/five_agents.toml");
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    spec_ = *spec;
    auto templates = LoadTemplates(spec_.templates);
    ASSERT_TRUE(templates.ok());
    templates_ = *templates;
    // Anchors need a few tasks per template first: the first realigned turn comes in task 7.
    auto tasks = LoadTasks(spec_.tasks[0], templates_, 8);
    ASSERT_TRUE(tasks.ok());
    for (Task& t : *tasks) {
      auto bound = BindTask(spec_, t, templates_);
      ASSERT_TRUE(bound.ok()) << bound.status().ToString();
      tasks_.push_back(*bound);
    }
  }

  WorkerOptions ToDaemon() const {
    return {.daemon_endpoint = config_.server.endpoint,
            .daemon_timeout = std::chrono::milliseconds(5000)};
  }
  std::string WorkerEndpoint(const std::string& name) const {
    return "ipc://" + dir_ + "/" + name + ".sock";
  }
  // The pipeline's agents with their sampling settings, all on `executors` in turn.
  std::vector<AgentSettings> Agents(const std::vector<TurnExecutor*>& executors) const {
    std::vector<AgentSettings> agents;
    for (size_t a = 0; a < spec_.agents.size(); ++a)
      agents.push_back({spec_.agents[a].id, spec_.agents[a].sampling,
                        spec_.agents[a].max_reply_tokens, executors[a % executors.size()]});
    return agents;
  }
  // One dense turn of the first task, rendered as the runner would.
  TurnRequest FirstTurn() const {
    const Task& task = tasks_[0];
    TurnRequest request;
    request.task_id = task.id;
    request.agent = task.template_id + "/reporter.0";
    request.slot_prefix = task.template_id + "/";
    request.segments = RenderPrompt(templates_.at(task.template_id), task.agents[0], task, {});
    return request;
  }

  std::unique_ptr<runtime::Model> model_;
  std::unique_ptr<runtime::Tokenizer> tokenizer_;
  PipelineSpec spec_;
  TemplateSet templates_;
  std::vector<Task> tasks_;
};

TEST_F(AgentWorkerTest, TwoWorkersServeTheFiveAgentPipelineWithKvcommReuse) {
  LocalExecutor local(*model_, *tokenizer_);
  auto agents = Agents({&local});
  PipelineRunner dense(templates_, agents.front(), agents);
  ServingWorker a(WorkerEndpoint("a"), ToDaemon()), b(WorkerEndpoint("b"), ToDaemon());
  const ExecutorOptions kvcomm{.mode = Mode::kKvcomm, .measure_fidelity = true};
  RemoteExecutor remote_a(a.endpoint(), kvcomm, "workers"),
      remote_b(b.endpoint(), kvcomm, "workers");
  auto remote_agents = Agents({&remote_a, &remote_b});
  PipelineRunner spread(templates_, remote_agents.front(), remote_agents);

  int same = 0, dense_correct = 0, kvcomm_correct = 0;
  int64_t realigned = 0, turns = 0;
  for (const Task& task : tasks_) {
    auto reference = dense.Run(task);
    auto run = spread.Run(task);
    ASSERT_TRUE(reference.ok() && run.ok()) << run.status().ToString();
    EXPECT_EQ(run->agent_ids, (std::vector<std::string>{"reporter-1", "reporter-2", "reporter-3",
                                                        "reporter-4", "lead"}));
    same += reference->final_reply == run->final_reply;
    dense_correct += reference->correct;
    kvcomm_correct += run->correct;
    for (const auto& t : run->turns) {
      EXPECT_FALSE(t.fallback || t.store_failed) << t.daemon_error;
      realigned += t.realigned_tokens;
      ++turns;
    }
  }
  EXPECT_EQ(a.turns_served() + b.turns_served(), turns);
  EXPECT_GT(a.turns_served(), 0);
  EXPECT_GT(b.turns_served(), 0);
  EXPECT_GT(realigned, 0) << "no placeholder was realigned from anchors";
  EXPECT_GE(same, static_cast<int>(tasks_.size()) - 1);
  EXPECT_GE(kvcomm_correct, dense_correct - 1);
  // Both workers' agents went to one pool in kvcommd.
  auto reader = Connect("workers");
  auto stats = reader->Stats();
  ASSERT_TRUE(stats.ok());
  std::set<std::string> agent_names;
  uint64_t served = 0;
  for (const auto& c : stats->reuse) {
    if (c.name_space != "workers") continue;
    agent_names.insert(c.agent);
    served += c.tokens_realigned;
  }
  EXPECT_GE(agent_names.size(), 2u);  // reporters and the lead, per template
  EXPECT_GE(static_cast<int64_t>(served), realigned);
}

TEST_F(AgentWorkerTest, TurnRequestsCarryTheReuseOptions) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<proto::TurnRequest>();
  const ExecutorOptions options{.mode = Mode::kKvcomm,
                                .measure_fidelity = true,
                                .bases_after_reply = true,
                                .true_context_anchors = true};
  internal::WriteTurnRequest(root, 1, {FirstTurn(), options, "ns"});
  auto read = internal::ReadTurnRequest(root.asReader());
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->options.mode, Mode::kKvcomm);
  EXPECT_TRUE(read->options.measure_fidelity);
  EXPECT_TRUE(read->options.bases_after_reply);
  EXPECT_TRUE(read->options.true_context_anchors);
  EXPECT_EQ(read->name_space, "ns");
  internal::WriteTurnRequest(root, 2, {FirstTurn(), {.mode = Mode::kKvcomm}, "ns"});
  read = internal::ReadTurnRequest(root.asReader());
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_FALSE(read->options.bases_after_reply);
  EXPECT_FALSE(read->options.true_context_anchors);
}

TEST_F(AgentWorkerTest, HostileRequestsGetErrorsAndTheWorkerKeepsServing) {
  ServingWorker worker(WorkerEndpoint("w"), ToDaemon());
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::rcvtimeo, 20000);
  socket.connect(worker.endpoint());
  auto exchange = [&](zmq::message_t frame) -> std::pair<proto::ErrorCode, std::string> {
    EXPECT_TRUE(socket.send(std::move(frame), zmq::send_flags::none));
    zmq::message_t reply;
    EXPECT_TRUE(socket.recv(reply));
    wire::AlignedFrame aligned(reply);
    capnp::FlatArrayMessageReader message(aligned.words());
    auto root = message.getRoot<proto::TurnReply>();
    if (!root.isError()) return {proto::ErrorCode::OK, root.getTurn().getReply()};
    return {root.getError().getCode(), root.getError().getMessage()};
  };
  auto request_frame = [&](const TurnRequest& request, uint32_t version) {
    capnp::MallocMessageBuilder message;
    auto root = message.initRoot<proto::TurnRequest>();
    internal::WriteTurnRequest(root, 1, {request, {}, ""});
    root.setProtocolVersion(version);
    return wire::ToFrame(message);
  };
  auto [garbage, why] = exchange(zmq::message_t(std::string("not a capnp message")));
  EXPECT_EQ(garbage, proto::ErrorCode::MALFORMED_MESSAGE) << why;
  std::string words(64, '\xff');  // whole words, nonsense pointers
  EXPECT_EQ(exchange(zmq::message_t(words)).first, proto::ErrorCode::MALFORMED_MESSAGE);
  EXPECT_EQ(exchange(request_frame(FirstTurn(), 99)).first, proto::ErrorCode::VERSION_MISMATCH);
  TurnRequest too_long = FirstTurn();
  too_long.max_reply_tokens = 100000;
  auto [refused, message] = exchange(request_frame(too_long, proto::WORKER_PROTOCOL_VERSION));
  EXPECT_EQ(refused, proto::ErrorCode::INVALID_ARGUMENT);
  EXPECT_NE(message.find("max_reply_tokens"), std::string::npos) << message;
  TurnRequest no_slot = FirstTurn();
  for (auto& segment : no_slot.segments)
    if (segment.kind == SegmentKind::kInput) segment.slot.clear();
  EXPECT_EQ(exchange(request_frame(no_slot, proto::WORKER_PROTOCOL_VERSION)).first,
            proto::ErrorCode::INVALID_ARGUMENT);
  // Still serving: a valid turn gets the reply a local run gives.
  LocalExecutor local(*model_, *tokenizer_);
  auto expected = local.Run(FirstTurn());
  ASSERT_TRUE(expected.ok());
  auto [ok, reply] = exchange(request_frame(FirstTurn(), proto::WORKER_PROTOCOL_VERSION));
  EXPECT_EQ(ok, proto::ErrorCode::OK);
  EXPECT_EQ(reply, expected->reply);
}

TEST_F(AgentWorkerTest, WithoutKvcommdTurnsRunInFullAndSaySo) {
  ServingWorker worker(WorkerEndpoint("lonely"),
                       {.daemon_endpoint = "ipc://" + dir_ + "/nobody.sock",
                        .daemon_timeout = std::chrono::milliseconds(200)});
  RemoteExecutor remote(worker.endpoint(), {.mode = Mode::kKvcomm}, "workers");
  LocalExecutor local(*model_, *tokenizer_);
  auto expected = local.Run(FirstTurn());
  auto turn = remote.Run(FirstTurn());
  ASSERT_TRUE(expected.ok() && turn.ok()) << turn.status().ToString();
  EXPECT_TRUE(turn->fallback);
  EXPECT_EQ(turn->reused_tokens, 0);
  EXPECT_NE(turn->daemon_error.find("Unavailable"), std::string::npos) << turn->daemon_error;
  EXPECT_EQ(turn->reply, expected->reply);
}

TEST_F(AgentWorkerTest, AMissingWorkerIsAnErrorNamingIt) {
  const std::string endpoint = WorkerEndpoint("absent");
  RemoteExecutor remote(endpoint, {}, "", std::chrono::milliseconds(300));
  auto turn = remote.Run(FirstTurn());
  ASSERT_FALSE(turn.ok());
  EXPECT_EQ(turn.status().code(), ErrorCode::kUnavailable);
  EXPECT_NE(turn.status().message().find(endpoint), std::string::npos) << turn.status().message();
}

}  // namespace
}  // namespace kvcomm::testing
