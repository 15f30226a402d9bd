// RequestHandler on its own (no sockets): every malformed input gets a typed error reply.
#include "daemon/request_handler.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <random>

#include "schemas/wire.h"
#include "tests/kvstore/test_segments.h"

namespace kvcomm::daemon {
namespace {

class RequestHandlerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kvstore::StoreOptions options;
    options.persist = false;
    options.host_capacity_bytes = 1 << 20;
    store_ = std::move(kvstore::TieredStore::Open(options)).value();
    config_.max_request_bytes = 64 * 1024;
    anchors_ = std::make_unique<AnchorService>(*store_, AnchorPoolConfig{});
    handler_ = std::make_unique<RequestHandler>(*store_, *anchors_, sessions_, counters_, config_);
  }

  // Sends the request and returns the decoded reply's error code (kOk for a result).
  ErrorCode Send(std::vector<zmq::message_t> frames, std::string* message = nullptr,
                 std::vector<zmq::message_t>* reply_frames = nullptr) {
    auto reply = handler_->Handle("client-1", std::move(frames));
    EXPECT_GE(reply.size(), 1u);
    wire::AlignedFrame aligned(reply[0]);
    EXPECT_TRUE(aligned.status().ok());
    capnp::FlatArrayMessageReader reader(aligned.words());
    auto root = reader.getRoot<proto::Reply>();
    ErrorCode code = ErrorCode::kOk;
    if (root.isError()) {
      code = static_cast<ErrorCode>(root.getError().getCode());
      if (message) *message = root.getError().getMessage();
    }
    if (reply_frames) *reply_frames = std::move(reply);
    return code;
  }

  std::vector<zmq::message_t> Hello(uint32_t version = proto::PROTOCOL_VERSION,
                                    const char* ns = "test") {
    capnp::MallocMessageBuilder message;
    auto hello = message.initRoot<proto::Request>().initHello();
    hello.setProtocolVersion(version);
    hello.setNamespace(ns);
    hello.setClientName("unit");
    wire::WriteKey(hello.initFingerprint(), FingerprintFromShape(2, 2, 8, DType::kF32));
    std::vector<zmq::message_t> frames;
    frames.push_back(wire::ToFrame(message));
    return frames;
  }

  // A PutSegment request for `segment`; `mutate` may damage it.
  std::vector<zmq::message_t> Put(
      const kvstore::Segment& segment,
      const std::function<void(proto::PutSegment::Builder)>& mutate = {}) {
    capnp::MallocMessageBuilder message;
    auto put = message.initRoot<proto::Request>().initPut();
    wire::WriteShape(put.initShape(), segment.meta.layout);
    auto ids = put.initTokenIds(static_cast<unsigned>(segment.meta.token_ids.size()));
    for (unsigned i = 0; i < ids.size(); ++i) ids.set(i, segment.meta.token_ids[i]);
    wire::DescribeKvTensor(put.initTensors(1)[0], segment.meta.layout, segment.meta.checksum);
    if (mutate) mutate(put);
    std::vector<zmq::message_t> frames;
    frames.push_back(wire::ToFrame(message));
    frames.push_back(wire::BlobFrame(segment.payload));
    return frames;
  }

  std::unique_ptr<kvstore::TieredStore> store_;
  std::unique_ptr<AnchorService> anchors_;
  SessionTable sessions_{16};
  DaemonCounters counters_;
  ServerConfig config_;
  std::unique_ptr<RequestHandler> handler_;
};

TEST_F(RequestHandlerTest, PutBeforeHelloIsAFailedPrecondition) {
  auto segment = kvcomm::testing::MakeSegment(4, 1);
  std::string message;
  EXPECT_EQ(Send(Put(segment), &message), ErrorCode::kFailedPrecondition);
  EXPECT_NE(message.find("Hello"), std::string::npos);
}

TEST_F(RequestHandlerTest, WrongProtocolVersionAndBadNamespaceAreRefused) {
  std::string message;
  EXPECT_EQ(Send(Hello(99), &message), ErrorCode::kVersionMismatch);
  EXPECT_NE(message.find("99"), std::string::npos);
  EXPECT_EQ(Send(Hello(proto::PROTOCOL_VERSION, "bad namespace!")), ErrorCode::kInvalidArgument);
  EXPECT_EQ(Send(Hello()), ErrorCode::kOk);
}

TEST_F(RequestHandlerTest, ValidPutIsStoredAndDamagedPutsAreNamed) {
  ASSERT_EQ(Send(Hello()), ErrorCode::kOk);
  auto segment = kvcomm::testing::MakeSegment(8, 2);
  struct Case {
    std::function<void(proto::PutSegment::Builder)> damage;
    ErrorCode code;
    const char* mentions;
  };
  const Case cases[] = {
      {[](auto p) { p.getShape().setTokens(9); }, ErrorCode::kInvalidArgument, "shape"},
      {[](auto p) { p.getShape().setHeadDim(0); }, ErrorCode::kInvalidArgument, "head_dim"},
      {[](auto p) { p.getTensors()[0].setChecksum(1); }, ErrorCode::kDataLoss, "checksum"},
      {[](auto p) { p.getTensors()[0].setByteLength(3); }, ErrorCode::kInvalidArgument, "bytes"},
      {[](auto p) { p.getTensors()[0].setName("k"); }, ErrorCode::kInvalidArgument, "'kv'"},
      {[](auto p) { p.getShape().setDtype(static_cast<proto::DType>(77)); },
       ErrorCode::kInvalidArgument, "dtype"},
      {[](auto p) { p.initTokenIds(3); }, ErrorCode::kInvalidArgument, "tokenIds"},
      {[](auto p) { p.initTensors(0); }, ErrorCode::kInvalidArgument, "one tensor"},
  };
  for (const auto& c : cases) {
    std::string message;
    EXPECT_EQ(Send(Put(segment, c.damage), &message), c.code) << message;
    EXPECT_NE(message.find(c.mentions), std::string::npos) << message;
  }
  EXPECT_EQ(store_->Stats().segments, 0u);  // nothing damaged reached the store
  EXPECT_EQ(Send(Put(segment)), ErrorCode::kOk);
  EXPECT_EQ(store_->Stats().segments, 1u);
}

TEST_F(RequestHandlerTest, RandomBytesAndBrokenFramesGetMalformedMessageReplies) {
  std::mt19937 rng(1);
  for (int i = 0; i < 500; ++i) {
    size_t n = (rng() % 64) * (i % 2 ? 8 : 1) + 1;
    std::string bytes(n, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    std::vector<zmq::message_t> frames;
    frames.emplace_back(bytes.data(), bytes.size());
    ErrorCode code = Send(std::move(frames));
    EXPECT_NE(code, ErrorCode::kOk);
    EXPECT_NE(code, ErrorCode::kInternal);
  }
  EXPECT_EQ(Send({}), ErrorCode::kMalformedMessage);
  EXPECT_EQ(Send(Hello()), ErrorCode::kOk);  // still serving
}

TEST_F(RequestHandlerTest, EveryTruncationOfAValidRequestIsHandled) {
  ASSERT_EQ(Send(Hello()), ErrorCode::kOk);
  auto segment = kvcomm::testing::MakeSegment(8, 3);
  auto frames = Put(segment);
  std::string whole(static_cast<const char*>(frames[0].data()), frames[0].size());
  for (size_t cut = 0; cut < whole.size(); cut += 1) {
    std::vector<zmq::message_t> truncated;
    truncated.emplace_back(whole.data(), cut);
    truncated.push_back(wire::BlobFrame(segment.payload));
    EXPECT_NE(Send(std::move(truncated)), ErrorCode::kOk) << cut;
  }
  EXPECT_EQ(store_->Stats().segments, 0u);
}

TEST_F(RequestHandlerTest, OversizedRequestIsRefusedBeforeParsing) {
  ASSERT_EQ(Send(Hello()), ErrorCode::kOk);
  auto big = kvcomm::testing::MakeSegment(1024, 4);  // 128 KiB > 64 KiB limit
  std::string message;
  EXPECT_EQ(Send(Put(big), &message), ErrorCode::kResourceExhausted);
  EXPECT_NE(message.find("max_request_bytes"), std::string::npos);
}

TEST_F(RequestHandlerTest, ExtraPayloadFramesOnAPingAreRefused) {
  capnp::MallocMessageBuilder message;
  message.initRoot<proto::Request>().setPing();
  std::vector<zmq::message_t> frames;
  frames.push_back(wire::ToFrame(message));
  frames.emplace_back("junk", 4);
  EXPECT_EQ(Send(std::move(frames)), ErrorCode::kInvalidArgument);
  EXPECT_EQ(counters_.errors(ErrorCode::kInvalidArgument), 1u);
}

// A model of 2 layers, 2 kv heads, head dim 8 (fp32) with valid RoPE frequencies.
void FillModel(proto::ReuseModel::Builder model) {
  auto shape = model.initShape();
  shape.setNumLayers(2);
  shape.setKvHeads(2);
  shape.setHeadDim(8);
  shape.setDtype(proto::DType::F32);
  auto freq = model.initRopeInvFreq(4);
  for (unsigned i = 0; i < 4; ++i) freq.set(i, 1.f / static_cast<float>(i + 1));
  model.initBasePrefix(1).set(0, 1);
}

// A PlanPrompt request for one template and one placeholder segment; `mutate` may damage it.
std::vector<zmq::message_t> PlanPrompt(
    const std::function<void(proto::PlanPrompt::Builder)>& mutate = {}) {
  capnp::MallocMessageBuilder message;
  auto plan = message.initRoot<proto::Request>().initPlanPrompt();
  plan.setAgent("agent");
  FillModel(plan.initModel());
  auto segments = plan.initSegments(2);
  segments[0].initTokenIds(3).set(0, 1);
  segments[1].setRole(proto::SegmentRole::PLACEHOLDER);
  segments[1].setSlot("input");
  segments[1].initTokenIds(2).set(0, 5);
  if (mutate) mutate(plan);
  std::vector<zmq::message_t> frames;
  frames.push_back(wire::ToFrame(message));
  return frames;
}

TEST_F(RequestHandlerTest, PlanPromptAnswersEverySegmentAndRefusesBadPlans) {
  ASSERT_EQ(Send(Hello()), ErrorCode::kOk);
  std::vector<zmq::message_t> reply;
  ASSERT_EQ(Send(PlanPrompt(), nullptr, &reply), ErrorCode::kOk);
  {
    wire::AlignedFrame aligned(reply[0]);
    capnp::FlatArrayMessageReader reader(aligned.words());
    auto plan = reader.getRoot<proto::Reply>().getPlan();
    ASSERT_EQ(plan.getSegments().size(), 2u);
    // Nothing stored: both are computed by the agent; no base, so no anchor either.
    for (auto s : plan.getSegments()) {
      EXPECT_EQ(s.getDecision(), proto::ReuseDecision::PREFILL);
      EXPECT_FALSE(s.getReportActual());
      EXPECT_EQ(s.getTensorIndex(), -1);
    }
  }
  std::string message;
  EXPECT_EQ(Send(PlanPrompt([](auto p) { p.getModel().initRopeInvFreq(3); }), &message),
            ErrorCode::kInvalidArgument);
  EXPECT_NE(message.find("ropeInvFreq"), std::string::npos) << message;
  EXPECT_EQ(Send(PlanPrompt([](auto p) { p.getSegments()[1].setSlot(""); }), &message),
            ErrorCode::kInvalidArgument);
  EXPECT_NE(message.find("slot"), std::string::npos) << message;
  EXPECT_EQ(Send(PlanPrompt([](auto p) { p.getModel().getShape().setHeadDim(0); })),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(Send(PlanPrompt([](auto p) { p.setAgent(""); })), ErrorCode::kInvalidArgument);
}

TEST_F(RequestHandlerTest, ReportActualWithMissingOrDamagedKvIsRefused) {
  ASSERT_EQ(Send(Hello()), ErrorCode::kOk);
  capnp::MallocMessageBuilder message;
  auto report = message.initRoot<proto::Request>().initReportActual();
  report.setAgent("agent");
  report.setSlot("input");
  FillModel(report.initModel());
  report.initPlaceholderTokens(2);
  KvLayout layout{2, 2, 2, 8, DType::kF32};
  std::vector<std::byte> kv(layout.PayloadBytes(), std::byte{1});
  wire::DescribeKvTensor(report.initTensors(1)[0], layout, Checksum64(kv) + 1);  // wrong
  std::vector<zmq::message_t> frames;
  frames.push_back(wire::ToFrame(message));
  std::string error;
  EXPECT_EQ(Send(std::move(frames), &error), ErrorCode::kInvalidArgument);  // no KV frame
  EXPECT_NE(error.find("KV frames"), std::string::npos) << error;
  frames.clear();
  frames.push_back(wire::ToFrame(message));
  frames.emplace_back(kv.data(), kv.size());
  EXPECT_NE(Send(std::move(frames), &error), ErrorCode::kOk);
  EXPECT_NE(error.find("checksum"), std::string::npos) << error;
}

}  // namespace
}  // namespace kvcomm::daemon
