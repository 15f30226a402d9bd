// Hostile peers on raw sockets: each bad message is answered with a typed error (or, past the
// hard frame limit, the peer is cut off) while a correct client keeps being served.
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <zmq_addon.hpp>

#include "schemas/wire.h"
#include "tests/integration/daemon_fixture.h"

namespace kvcomm::testing {
namespace {

class HostileInputTest : public DaemonFixture {
 protected:
  void SetUp() override {
    DaemonFixture::SetUp();
    raw_ = zmq::socket_t(context_, zmq::socket_type::dealer);
    raw_.set(zmq::sockopt::linger, 0);
    raw_.connect(config_.server.endpoint);
    good_ = Connect();
  }

  // Sends raw frames; returns the error code of the reply, or nullopt if none came in 2 s.
  std::optional<ErrorCode> SendRaw(std::vector<zmq::message_t> frames) {
    zmq::send_multipart(raw_, frames);
    zmq::pollitem_t item{raw_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(2000));
    if (!(item.revents & ZMQ_POLLIN)) return std::nullopt;
    std::vector<zmq::message_t> reply;
    (void)zmq::recv_multipart(raw_, std::back_inserter(reply));
    wire::AlignedFrame aligned(reply.at(0));
    capnp::FlatArrayMessageReader reader(aligned.words());
    auto root = reader.getRoot<proto::Reply>();
    return root.isError() ? static_cast<ErrorCode>(root.getError().getCode()) : ErrorCode::kOk;
  }

  std::vector<zmq::message_t> Frames(capnp::MallocMessageBuilder& message) {
    std::vector<zmq::message_t> frames;
    frames.push_back(wire::ToFrame(message));
    return frames;
  }

  std::vector<zmq::message_t> HelloFrames(uint32_t version) {
    capnp::MallocMessageBuilder message;
    auto hello = message.initRoot<proto::Request>().initHello();
    hello.setProtocolVersion(version);
    hello.setNamespace("test");
    wire::WriteKey(hello.initFingerprint(), TestModel());
    return Frames(message);
  }

  // The correct client still gets exact bytes back.
  void ExpectGoodClientServed(uint64_t seed) {
    auto put = MakePut(16, seed);
    auto info = good_->Put(put);
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    auto got = good_->Get(info->context_key);
    ASSERT_TRUE(got.ok());
    ASSERT_EQ(std::memcmp(got->payload.data(), put.payload.data(), put.payload.size()), 0);
  }

  zmq::context_t context_{1};
  zmq::socket_t raw_;
  std::unique_ptr<client::Client> good_;
};

TEST_F(HostileInputTest, RandomBytesGetErrorsAndTheDaemonKeepsServing) {
  std::mt19937 rng(42);
  for (int i = 0; i < 200; ++i) {
    std::vector<zmq::message_t> frames;
    int n = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < n; ++f) {
      std::string bytes(rng() % 300, '\0');
      for (auto& c : bytes) c = static_cast<char>(rng());
      frames.emplace_back(bytes.data(), bytes.size());
    }
    auto code = SendRaw(std::move(frames));
    ASSERT_TRUE(code.has_value()) << "no reply to garbage message " << i;
    EXPECT_NE(*code, ErrorCode::kOk);
    if (i % 50 == 0) ExpectGoodClientServed(i);
  }
  ExpectGoodClientServed(1000);
}

TEST_F(HostileInputTest, WrongProtocolVersionIsRefused) {
  EXPECT_EQ(SendRaw(HelloFrames(proto::PROTOCOL_VERSION + 1)), ErrorCode::kVersionMismatch);
  EXPECT_EQ(SendRaw(HelloFrames(proto::PROTOCOL_VERSION)), ErrorCode::kOk);
  ExpectGoodClientServed(1);
}

TEST_F(HostileInputTest, TruncatedFramesAndShapeByteMismatchesAreRefused) {
  ASSERT_EQ(SendRaw(HelloFrames(proto::PROTOCOL_VERSION)), ErrorCode::kOk);
  auto put = MakePut(32, 7);
  auto put_frames = [&](uint32_t claimed_tokens, size_t payload_bytes, uint64_t lease = 0) {
    capnp::MallocMessageBuilder message;
    auto p = message.initRoot<proto::Request>().initPut();
    p.setLease(lease);
    KvLayout layout = put.layout;
    layout.tokens = claimed_tokens;
    wire::WriteShape(p.initShape(), layout);
    wire::DescribeKvTensor(p.initTensors(1)[0], layout,
                           Checksum64(put.payload.span().first(payload_bytes)));
    auto frames = Frames(message);
    frames.emplace_back(put.payload.data(), payload_bytes);
    return frames;
  };
  EXPECT_EQ(SendRaw(put_frames(33, put.payload.size())),
            ErrorCode::kInvalidArgument);  // shape says more
  EXPECT_EQ(SendRaw(put_frames(32, put.payload.size() / 2)),
            ErrorCode::kInvalidArgument);  // truncated payload
  auto frames = put_frames(32, put.payload.size());
  frames.pop_back();  // payload frame missing
  EXPECT_EQ(SendRaw(std::move(frames)), ErrorCode::kInvalidArgument);
  frames = put_frames(32, put.payload.size());
  std::string cut(static_cast<const char*>(frames[0].data()), frames[0].size() / 2);
  frames[0] = zmq::message_t(cut.data(), cut.size());  // truncated Cap'n Proto frame
  auto code = SendRaw(std::move(frames));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, ErrorCode::kMalformedMessage);
  // A payload said to be in a lease comes without a frame, and needs kvcommd's arena.
  EXPECT_EQ(SendRaw(put_frames(32, put.payload.size(), 77)), ErrorCode::kInvalidArgument);
  frames = put_frames(32, put.payload.size(), 77);
  frames.pop_back();
  EXPECT_EQ(SendRaw(std::move(frames)), ErrorCode::kUnavailable);
  EXPECT_EQ(SendRaw(put_frames(32, put.payload.size())),
            ErrorCode::kOk);  // the honest version works
  ExpectGoodClientServed(2);
}

TEST_F(HostileInputTest, BadReuseCheckOutcomesAreRefused) {
  ASSERT_EQ(SendRaw(HelloFrames(proto::PROTOCOL_VERSION)), ErrorCode::kOk);
  auto check = [&](const std::string& agent, std::vector<std::string> slots, double kl,
                   bool with_frame = false, std::vector<std::string> blamed = {}) {
    capnp::MallocMessageBuilder message;
    auto c = message.initRoot<proto::Request>().initReportCheck();
    c.setAgent(agent);
    auto list = c.initSlots(static_cast<unsigned>(slots.size()));
    for (unsigned i = 0; i < list.size(); ++i) list.set(i, slots[i]);
    auto blamed_list = c.initBlamedSlots(static_cast<unsigned>(blamed.size()));
    for (unsigned i = 0; i < blamed_list.size(); ++i) blamed_list.set(i, blamed[i]);
    c.setReplyChanged(true);
    c.setNextTokenKl(kl);
    auto frames = Frames(message);
    if (with_frame) frames.emplace_back("x", 1);
    return SendRaw(std::move(frames));
  };
  EXPECT_EQ(check("", {"s"}, 0.1), ErrorCode::kInvalidArgument);
  EXPECT_EQ(check("a", {}, 0.1), ErrorCode::kInvalidArgument);
  EXPECT_EQ(check("a", {std::string("s\x01")}, 0.1), ErrorCode::kInvalidArgument);
  EXPECT_EQ(check("a", {"s", "s"}, 0.1), ErrorCode::kInvalidArgument);
  EXPECT_EQ(check("a", {"s"}, std::nan("")), ErrorCode::kInvalidArgument);
  EXPECT_EQ(check("a", {"s"}, -1), ErrorCode::kInvalidArgument);
  EXPECT_EQ(check("a", {"s"}, 0.1, true), ErrorCode::kInvalidArgument);
  EXPECT_EQ(check("a", {"s"}, 0.1, false, {"t"}), ErrorCode::kInvalidArgument);  // not checked
  EXPECT_EQ(check("a", {"s"}, 0.1, false, {"s", "s"}), ErrorCode::kInvalidArgument);
  // Well formed, but no plan ever estimated that slot for that agent: nothing is counted.
  EXPECT_EQ(check("a", {"s"}, 0.1), ErrorCode::kNotFound);
  auto stats = good_->Stats();
  ASSERT_TRUE(stats.ok());
  for (const auto& c : stats->reuse) EXPECT_EQ(c.checks, 0u);
  ExpectGoodClientServed(3);
}

TEST_F(HostileInputTest, BadAnchorOffersAreRefused) {
  ASSERT_EQ(SendRaw(HelloFrames(proto::PROTOCOL_VERSION)), ErrorCode::kOk);
  auto offer = [&](const std::string& agent, bool with_frame) {
    capnp::MallocMessageBuilder message;
    auto o = message.initRoot<proto::Request>().initOfferAnchor();
    o.setAgent(agent);
    o.setSlot("s");
    o.initPlaceholderTokens(2).set(0, 7);
    auto frames = Frames(message);
    if (with_frame) frames.emplace_back("x", 1);
    return SendRaw(std::move(frames));
  };
  EXPECT_EQ(offer("a", true), ErrorCode::kInvalidArgument);   // KV has no place in an offer
  EXPECT_EQ(offer("a", false), ErrorCode::kInvalidArgument);  // no model geometry
  EXPECT_EQ(offer("", false), ErrorCode::kInvalidArgument);
  ExpectGoodClientServed(4);
}

// A report naming a lease, to a kvcommd that lends none (no GPU here), or with KV frames as
// well: refused with the reason.
TEST_F(HostileInputTest, ReportsInLeasesKvcommdCannotReadAreRefused) {
  ASSERT_EQ(SendRaw(HelloFrames(proto::PROTOCOL_VERSION)), ErrorCode::kOk);
  auto report = [&](bool with_frame) {
    capnp::MallocMessageBuilder message;
    auto r = message.initRoot<proto::Request>().initReportActual();
    r.setAgent("a");
    r.setSlot("s");
    auto model = r.initModel();
    auto shape = model.initShape();
    shape.setNumLayers(2);
    shape.setKvHeads(2);
    shape.setHeadDim(16);
    shape.setDtype(proto::DType::BF16);
    auto freq = model.initRopeInvFreq(8);
    for (unsigned i = 0; i < 8; ++i) freq.set(i, 0.01f);
    r.initPlaceholderTokens(3).set(0, 5);
    auto tensor = r.initTensors(1)[0];
    tensor.setName("kv");
    r.setLease(12345);
    auto frames = Frames(message);
    if (with_frame) frames.emplace_back("x", 1);
    return SendRaw(std::move(frames));
  };
  EXPECT_EQ(report(true), ErrorCode::kInvalidArgument);
  EXPECT_EQ(report(false), ErrorCode::kUnavailable);
  ExpectGoodClientServed(5);
}

TEST_F(HostileInputTest, OversizedMessagesAreRefusedOrCutOff) {
  // Over max_request_bytes (8 MiB) but under the hard frame cap: a typed error.
  std::string nine_mib(9 << 20, 'x');
  std::vector<zmq::message_t> frames;
  frames.emplace_back(nine_mib.data(), nine_mib.size());
  EXPECT_EQ(SendRaw(std::move(frames)), ErrorCode::kResourceExhausted);
  // Far over: ZeroMQ drops the connection before anything is buffered whole; no reply.
  std::string huge(20 << 20, 'y');
  frames.clear();
  frames.emplace_back(huge.data(), huge.size());
  EXPECT_FALSE(SendRaw(std::move(frames)).has_value());
  ExpectGoodClientServed(3);
  auto stats = good_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->puts, 1u);
}

}  // namespace
}  // namespace kvcomm::testing
